"""The agent never answers its own voice."""

from __future__ import annotations

from edgevoice.agent.self_hearing import OwnVoice, shared_in_order, sounds_like


def test_shared_in_order_is_the_longest_common_subsequence():
    assert shared_in_order("a b c d".split(), "a x c d".split()) == 3
    assert shared_in_order("d c b a".split(), "a b c d".split()) == 1
    assert shared_in_order([], ["a"]) == 0


def test_a_garbled_echo_of_what_was_said_sounds_like_it_a_new_question_does_not():
    said = "It is half past two in the afternoon, and the sun is out."
    assert sounds_like("it is half past to in the afternoon", said)
    assert sounds_like("and the sun is out", said)
    assert not sounds_like("what is the weather tomorrow", said)
    assert not sounds_like("yes", "yes it is")  # one word is never dropped
    assert not sounds_like("the sun", "")


def test_only_speech_heard_while_or_just_after_it_played_counts():
    own = OwnVoice()
    own.played(10.0, 12.0, "the sun is out today")
    assert own.is_echo("the sun is out", 10.5, 12.3)
    assert own.is_echo("the sun is out", 12.5, 12.9)  # echo arrives a little late
    assert not own.is_echo("the sun is out", 20.0, 21.0)  # said again much later: a request
    own.played(30.0, 32.0, "the rain will come")
    own.cut(30.0)  # cleared before it began: never played
    assert not own.is_echo("the rain will come", 30.2, 31.5)
