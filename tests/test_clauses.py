"""Speech cleaning and the streaming clause splitter: examples plus hypothesis properties."""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgevoice.tts.clauses import CODE_OMITTED, ClauseSplitter, clean_for_speech, is_speakable

# --- clean_for_speech examples --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("**Bold** and _italic_ and `len()`", "Bold and italic and len()"),
        (
            "## Results\n- first item\n* second\n1. third\n> quoted",
            "Results first item second third quoted",
        ),
        ("See https://www.example.com/a/b?x=1. Then go.", "See example.com. Then go."),
        ("(http://user@host.org:8080/path)", "(host.org)"),
        ("Here:\n```python\nprint(1)\n```\nDone.", f"Here: {CODE_OMITTED} Done."),
        ("Unclosed:\n```\ncode goes on", f"Unclosed: {CODE_OMITTED}"),
        ("| name | age |\n|---|:--:|\n| Ann | 31 |", "name, age. Ann, 31."),
        ("Great 😀👍🏽 job :) well done", "Great job well done"),
        ("2*3 is 6 and 2 * 3 too, ~5 min", "2 times 3 is 6 and 2 times 3 too, about 5 min"),
        ("[the docs](http://x.com/docs) and ![a cat](cat.png) [1]", "the docs and a cat"),
        ("snake_case and ~~old~~ new", "snake case and old new"),
        ("It costs $3.50, i.e. 10% less: 10:30 a.m.", "It costs $3.50, i.e. 10% less: 10:30 a.m."),
        ("  lots\tof \n\n whitespace  ", "lots of whitespace"),
        ("a <br> b", "a b"),
        ("", ""),
    ],
)
def test_clean_for_speech_examples(text: str, spoken: str) -> None:
    assert clean_for_speech(text) == spoken


def test_markers_mid_line_are_text() -> None:
    assert clean_for_speech("5 - 3 = 2 and # of items") == "5 - 3 = 2 and # of items"


# --- splitter helpers -----------------------------------------------------------------------------


def run(splitter: ClauseSplitter, deltas: list[str]) -> list[tuple[int, str]]:
    """Push ``deltas``; return (index of the delta that released it, clause) pairs."""
    out: list[tuple[int, str]] = []
    for i, delta in enumerate(deltas):
        out.extend((i, clause) for clause in splitter.push(delta))
    out.extend((len(deltas), clause) for clause in splitter.flush())
    return out


def clauses_of(text: str, splitter: ClauseSplitter | None = None) -> list[str]:
    """Clauses for ``text`` pushed one character at a time (the hardest case)."""
    return [c for _, c in run(splitter or ClauseSplitter(), list(text))]


# --- splitter examples ----------------------------------------------------------------------------


def test_first_clause_at_comma_after_three_words() -> None:
    assert clauses_of("Well, I think so, more or less. Next part here.") == [
        "Well, I think so,",
        "more or less.",
        "Next part here.",
    ]


def test_first_clause_at_short_sentence() -> None:
    assert clauses_of("Yes. That is right, of course.") == ["Yes.", "That is right, of course."]


def test_later_clauses_wait_for_sentence_end() -> None:
    text = "The answer is simple, really. After that, we go on, and on, to the end."
    assert clauses_of(text) == [
        "The answer is simple,",
        "really.",
        "After that, we go on, and on, to the end.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith met Mrs. Jones and Prof. Lee at St. Mary's.",
        "We use tools, e.g. hammers, i.e. simple ones.",
        "The U.S. economy grew.",
        "Pi is about 3.14159 today.",
        "The train leaves at 10:30 sharp.",
        "Wait...what happened here.",
        "Version 2.0.1 is out.",
    ],
)
def test_no_split_inside_abbreviations_numbers_times(text: str) -> None:
    assert clauses_of(text, ClauseSplitter(min_first_words=100)) == [text]


def test_ellipsis_with_space_is_a_clause_boundary_for_the_first_clause() -> None:
    assert clauses_of("I am not sure... maybe tomorrow.") == ["I am not sure...", "maybe tomorrow."]


def test_question_exclamation_and_closing_quote() -> None:
    text = 'He said "Stop!" Then he left. Really?) Yes.'
    assert clauses_of(text) == ['He said "Stop!"', "Then he left.", "Really?)", "Yes."]


def test_list_items_and_numbers_at_line_start() -> None:
    text = "Options:\n1. Apples are red\n2. Pears\n- Plums\n\nDone."
    assert clauses_of(text) == ["Options:", "Apples are red", "Pears", "Plums", "Done."]


def test_code_fence_is_not_cut_and_becomes_one_clause() -> None:
    text = "Try this:\n```python\nx = 1. y = 2, z\nprint(x)\n```\nIt prints one."
    assert clauses_of(text) == ["Try this:", CODE_OMITTED, "It prints one."]


def test_table_rows_are_not_cut() -> None:
    text = "| a. b | c, d |\n|---|---|\n| 1 | 2 |\nEnd."
    assert clauses_of(text) == ["a. b, c, d.", "1, 2.", "End."]


def test_run_on_sentence_is_cut_at_a_comma_or_space() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    splitter = ClauseSplitter(first_max_chars=40, max_chars=60)
    clauses = clauses_of(words, splitter)
    assert len(clauses) > 3
    assert all(len(c) <= 60 for c in clauses)
    assert len(clauses[0]) <= 40
    with_comma = "one two three four five six seven eight, nine ten eleven twelve thirteen"
    assert clauses_of(with_comma, ClauseSplitter(min_first_words=20, first_max_chars=50))[0] == (
        "one two three four five six seven eight,"
    )


def test_punctuation_only_pieces_join_the_next_clause() -> None:
    assert clauses_of("Hi. 😀 ... !! Next one.") == ["Hi.", "... !! Next one."]
    assert clauses_of("Done. :) 🎉") == ["Done."]


def test_flush_resets_and_reset_drops() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Hello there") == []
    assert splitter.flush() == ["Hello there"]
    assert splitter.flush() == []
    splitter.push("Interrupted answer")
    splitter.reset()
    assert splitter.push("New. ") == ["New."]


def test_deltas_of_any_size() -> None:
    text = "First sentence here. Second one, with a comma. Third!"
    assert [c for _, c in run(ClauseSplitter(), [text])] == [
        "First sentence here.",
        "Second one, with a comma.",
        "Third!",
    ]


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        ClauseSplitter(min_first_words=0)


# --- properties -----------------------------------------------------------------------------------

SNIPPETS = [
    "word", "Hello", "the", "Dr.", "e.g.", "U.S.", "3.14", "10:30", "1.", "2)", "...", "…", "—",
    ". ", ", ", "; ", ": ", "! ", "? ", ".\n", "\n", "\n\n", "\n- ", "\n* ", "\n# ", "\n> ",
    "\n1. ", "**", "*", "_", "__", "~", "~~", "`", "```", "```py\n", "|", "\n| a | b |", "|---|",
    "[", "]", "](", ")", "(", "![", "[1]", "https://ex.com/p?q=1", "www.site.org", "<br>",
    "😀", "👍🏽", "\u200d", ":)", "#", ">", "-", "\"", "'", "”", "2*3", " * ", "\t", "\r",
    "a", "B", "7", " ", "  ",
]
texts = st.lists(
    st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=4)), max_size=40
).map("".join)
splitters = st.builds(
    ClauseSplitter,
    min_first_words=st.integers(1, 4),
    first_max_chars=st.integers(1, 80),
    max_chars=st.integers(1, 160),
)


# Chinese/Japanese/Thai text and full-width punctuation are cut with no whitespace at the cut.
SPACELESS_OR_WIDE = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff"
                               "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def split_into_deltas(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in pairwise(points)]


@settings(max_examples=400, deadline=None)
@given(text=texts, splitter=splitters, cuts=st.lists(st.integers(0, 400), max_size=30))
@example(text="Hi, a. b\n| x. y |", splitter=ClauseSplitter(1, 1, 1), cuts=[])
@example(text="```a. b``` - c. d", splitter=ClauseSplitter(1, 1, 1), cuts=[1, 2, 3, 4, 5])
def test_clauses_concatenate_to_the_cleaned_text(
    text: str, splitter: ClauseSplitter, cuts: list[int]
) -> None:
    clauses = [c for _, c in run(splitter, split_into_deltas(text, cuts))]
    joined = " ".join(clauses)
    expected = clean_for_speech(text)
    if SPACELESS_OR_WIDE.search(text):  # cut between characters: no space was there
        joined, expected = "".join(joined.split()), "".join(expected.split())
    # Everything is spoken, except a trailing remainder with nothing speakable in it.
    assert expected.startswith(joined)
    assert not is_speakable(expected[len(joined) :])
    for clause in clauses:
        assert clause and is_speakable(clause)
        assert clause == " ".join(clause.split())


@settings(max_examples=200, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(0, 400), max_size=30))
def test_splitting_into_deltas_does_not_change_the_words(text: str, cuts: list[int]) -> None:
    def spoken_words(deltas: list[str]) -> list[str]:
        clauses = [c for _, c in run(ClauseSplitter(), deltas)]
        return [w for w in " ".join(clauses).split() if is_speakable(w)]

    assert spoken_words([text]) == spoken_words(split_into_deltas(text, cuts))


ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "approx", "fig", "dept",
}
# Plain words: no single letters (initials such as "A." are not sentence ends) or abbreviations.
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=8).filter(
    lambda w: w not in ABBREVIATIONS
)


@settings(max_examples=200, deadline=None)
@given(
    first=st.lists(words, min_size=1, max_size=12),
    rest=st.lists(words, min_size=1, max_size=12),
    end=st.sampled_from([".", "!", "?"]),
)
def test_first_clause_is_released_before_the_text_ends(
    first: list[str], rest: list[str], end: str
) -> None:
    text = " ".join(first) + end + " " + " ".join(rest) + "."
    released = run(ClauseSplitter(first_max_chars=1000), list(text))
    index, clause = released[0]
    assert index < len(text) - 1
    assert clause == " ".join(first) + end


@settings(max_examples=200, deadline=None)
@given(first=st.lists(words, min_size=3, max_size=10), rest=st.lists(words, min_size=1))
def test_first_clause_released_at_comma_after_enough_words(
    first: list[str], rest: list[str]
) -> None:
    text = " ".join(first) + ", " + " ".join(rest)
    released = run(ClauseSplitter(min_first_words=3, first_max_chars=1000), list(text))
    index, clause = released[0]
    assert clause == " ".join(first) + ","
    assert index <= len(" ".join(first)) + 1


@settings(max_examples=200, deadline=None)
@given(
    prose=st.lists(words, min_size=1, max_size=80),
    first_max=st.integers(10, 60),
    max_chars=st.integers(10, 120),
)
def test_plain_prose_clauses_respect_the_length_limits(
    prose: list[str], first_max: int, max_chars: int
) -> None:
    clauses = clauses_of(" ".join(prose), ClauseSplitter(1, first_max, max_chars))
    assert clauses[0] and len(clauses[0]) <= max(first_max, 8)
    assert all(len(c) <= max(max_chars, 8) for c in clauses[1:])


def test_first_clause_is_cut_after_max_words_when_no_punctuation_comes():
    text = "the quick brown fox jumps over the lazy dog and runs far away into the woods"
    splitter = ClauseSplitter(first_max_words=6)
    got = run(splitter, [w + " " for w in text.split()])
    first_at, first = got[0]
    assert first == "the quick brown fox jumps over"
    assert first_at == 5  # released with the sixth word (delta 5), not at 80 characters
    assert " ".join(c for _, c in got) == text
    # punctuation before the limit still wins; later clauses are not limited by it
    assert clauses_of("Sure, the quick brown fox jumps over the lazy dog.",
                      ClauseSplitter(first_max_words=6))[0] == "Sure, the quick brown fox jumps"
    assert clauses_of("Yes. the quick brown fox jumps over the lazy dog and runs.",
                      ClauseSplitter(first_max_words=2)) == [
        "Yes.", "the quick brown fox jumps over the lazy dog and runs."]


def test_chinese_and_japanese_clauses_end_at_full_width_punctuation():
    # no space follows 。！？、 in these scripts: without this the whole answer was one clause
    text = "はい、わかりました。東京の天気は晴れです。明日は雨が降るでしょう！"
    got = run(ClauseSplitter(first_max_words=6), list(text))
    assert [c for _, c in got] == ["はい、わかりました。", "東京の天気は晴れです。",
                                   "明日は雨が降るでしょう！"]
    assert got[0][0] == text.index("。")  # released with its full stop, not at the end
    assert clauses_of("Sure. 「はい」と言いました。Then more.", ClauseSplitter()) == [
        "Sure.", "「はい」と言いました。", "Then more."]


def test_a_run_on_without_spaces_is_cut_between_characters():
    text = "我们今天去公园散步吧因为天气很好而且我们已经很久没有出去走走了所以一定要去看看那些" * 3
    got = run(ClauseSplitter(first_max_words=6, first_max_chars=80, max_chars=160), list(text))
    clauses = [c for _, c in got]
    assert len(clauses[0]) == 12  # about six words' worth, released long before the end
    assert got[0][0] == 12
    assert all(len(c) <= 160 for c in clauses)
    assert "".join(clauses) == text
    # Thai: never cut in front of a vowel or tone mark (the next character must not be a mark)
    thai = "สวัสดีครับวันนี้อากาศดีมากเราไปเที่ยวทะเลกันไหมครับผมคิดว่าน่าจะสนุกมากเลย" * 2
    parts = clauses_of(thai, ClauseSplitter(first_max_words=6))
    assert "".join(parts) == thai and len(parts) > 1
    assert all(not unicodedata.category(p[0]).startswith("M") for p in parts)


def test_latin_text_without_spaces_is_not_cut_inside_a_token():
    token = "i" * 200  # a URL, a hash, a random model's output: one token, never split
    assert clauses_of(token, ClauseSplitter(first_max_words=6)) == [token]
