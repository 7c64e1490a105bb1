"""Config files that try to hurt: every one refused quickly by `config check`, with key and
line, and by every other command with the same sentence (they share one validation)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from edgevoice.cli import main
from edgevoice.config import ConfigError, check_config, load_config, parse_config

REMOTE = "remotes:\n  r:\n    base_url: http://127.0.0.1:9/v1\n    model: m\n"


def billion_laughs() -> str:
    text = REMOTE + "    extra_body:\n      a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    prev = "a"
    for name in "bcdefghi":
        text += f"      {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        prev = name
    return text


HOSTILE = {
    "billion-laughs": (billion_laughs(), ["line 10", "alias bomb"]),
    "deep-nesting": ("llm:\n  model: " + "[" * 20_000 + "]" * 20_000 + "\n",
                     ["line 2", "nested more than"]),
    "huge-integer": ("audio:\n  sample_rate: " + "9" * 5000 + "\n", ["line 2", "5000 digits"]),
    "nan": ("vad:\n  neural_threshold: .nan\n", ["line 2", "vad.neural_threshold", "nan"]),
    "infinity": ("vad:\n  max_utterance_s: .inf\n", ["line 2", "vad.max_utterance_s"]),
    "duplicate-key": ("llm:\n  max_tokens: 8\nllm:\n  max_tokens: 9\n",
                      ["line 3", "duplicate key `llm`", "line 1"]),
    "duplicate-nested": ("vad:\n  mode: 1\n  mode: 2\n", ["line 3", "duplicate key `mode`"]),
    "binary-tag": (REMOTE + "    extra_body: {b: !!binary aGVsbG8=}\n",
                   ["line 5", "binary data"]),
    "set-tag": (REMOTE + "    extra_body: {s: !!set {a, b}}\n", ["line 5", "a set"]),
    "nan-in-extra-body": (REMOTE + "    extra_body: {t: .nan}\n",
                          ["line 5", "remotes.r.extra_body", "plain data"]),
    "bad-ipv6-url": ("remotes:\n  r:\n    base_url: 'http://[::1'\n    model: m\n",
                     ["line 3", "remotes.r.base_url", "not a valid URL"]),
    "url-without-host": ("remotes:\n  r:\n    base_url: 'http:///v1'\n    model: m\n",
                         ["line 3", "remotes.r.base_url", "with a host"]),
    "missing-ca-bundle": (REMOTE + "    ca_bundle: /nonexistent/ca.pem\n",
                          ["line 5", "remotes.r.ca_bundle", "does not exist"]),
    "reserved-extra-body": (REMOTE + "    extra_body: {stream: false}\n",
                            ["line 5", "remotes.r.extra_body", "stream"]),
    "control-character": ("llm:\n  model: \"a\x01b\"\n", ["line 2", "U+0001"]),
    "list-as-key": ("? [a, b]\n: 1\n", ["line 1", "plain word"]),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_config_check_refuses_each_with_key_and_line(tmp_path, capsys, case):
    text, expected = HOSTILE[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    assert main(["config", "check", str(path)]) == 2
    assert time.perf_counter() - started < 10  # not minutes of CPU
    err = capsys.readouterr().err
    for part in expected:
        assert part in err, (part, err)
    assert "Traceback" not in err


def test_a_ca_bundle_that_is_not_pem_is_refused(tmp_path, capsys):
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    path = tmp_path / "c.yaml"
    path.write_text(REMOTE + f"    ca_bundle: {pem}\n")
    assert main(["config", "check", str(path)]) == 2
    assert "no usable PEM" in capsys.readouterr().err


@pytest.mark.parametrize("raw", [bytes(range(256)) * 4, "llm:\n  model: x\n".encode("utf-16")])
def test_binary_and_utf16_files_are_one_sentence(tmp_path, capsys, raw):
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and "Traceback" not in err


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "c.yaml"
    with open(path, "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GB of NULs that would not fit in memory twice
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)


def test_dates_in_extra_body_stay_strings_that_json_can_send():
    cfg = parse_config(REMOTE + "    extra_body: {when: 2024-01-01, seed: 7}\n")
    body = cfg.remotes["r"].extra_body
    assert body == {"when": "2024-01-01", "seed": 7}
    json.dumps(body, allow_nan=False)


def test_merge_keys_are_not_duplicates():
    text = ("remotes:\n  a: &a\n    base_url: http://127.0.0.1:9/v1\n    model: m\n"
            "  b:\n    <<: *a\n    model: n\n")
    checked = check_config(text)
    assert checked.problems == ()
    assert checked.config.remotes["b"].model == "n"


@pytest.mark.parametrize("case", ["billion-laughs", "bad-ipv6-url"])
def test_every_command_refuses_the_file_config_check_refuses(tmp_path, case):
    """`ask` loads with the same validation as `config check`: same first sentence, exit 2."""
    text, expected = HOSTILE[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    check = subprocess.run([sys.executable, "-m", "edgevoice", "config", "check", str(path)],
                           capture_output=True, text=True, timeout=60)
    ask = subprocess.run([sys.executable, "-m", "edgevoice", "--config", str(path), "ask",
                          "hello"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert check.returncode == 2 and ask.returncode == 2, ask.stderr
    first = check.stderr.splitlines()[0].removeprefix("edgevoice: error: ")
    assert first in ask.stderr and "Traceback" not in ask.stderr
    assert expected[-1] in first


def test_config_check_and_parse_agree_on_every_hostile_case():
    for case, (text, _) in HOSTILE.items():
        if case in ("missing-ca-bundle",):
            continue
        checked = check_config(text, "f.yaml")
        assert checked.problems, case
        with pytest.raises(ConfigError) as info:
            parse_config(text, "f.yaml")
        assert str(checked.problems[0]) in str(info.value), case


def test_config_check_of_a_good_remote_is_ok(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(REMOTE + "    extra_body: {reasoning_effort: low}\n")
    assert main(["config", "check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
