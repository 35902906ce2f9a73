"""Hostile inputs, round seventeen (probe DL): this morning's new surfaces (JSON prompts files,
chat ``/t2i``'s word splitter, ``--vae`` as a Hub repo id, ``seeds``, the latent magnitude limit,
pickled VAE shapes). Each test fails on the code before its fix."""

from __future__ import annotations

import sys

import pytest

DIGITS = sys.get_int_max_str_digits() or 4300


@pytest.mark.parametrize("name,text", [
    ("p.jsonl", '"a red circle"\n' + "7" * (DIGITS + 1) + "\n"),
    ("p.ndjson", '{"prompt": "a", "id": ' + "7" * (DIGITS + 1) + "}\n"),
    ("p.json", '["a red circle", ' + "7" * (DIGITS + 1) + "]"),
])
def test_a_json_prompts_file_with_a_number_over_pythons_digit_limit_is_an_input_error(tmp_path, capsys, name, text):
    """A number of more digits than Python converts (4300) in a JSON prompts file was "internal
    error: ValueError: Exceeds the limit (4300 digits) for integer string conversion", exit 1: json
    raises a ValueError that is no JSONDecodeError. It is the record's input error (exit 3), with its
    line, and nothing is written."""
    from showo2_cli.cli import main

    (tmp_path / name).write_text(text, encoding="utf-8")
    out = tmp_path / "x.png"
    assert main(["t2i", "--prompts-file", str(tmp_path / name), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    line = 1 if name.endswith(".json") else (2 if name == "p.jsonl" else 1)
    assert f"prompts file '{tmp_path / name}' line {line}: a number of more than {DIGITS:,} digits" in err
    assert "internal error" not in err and "ValueError" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("chunk", [1 << 20, 64])
def test_a_records_array_with_a_number_over_pythons_digit_limit_is_an_input_error(tmp_path, chunk):
    """The same number in a training records ``.json`` array (read in chunks) was an uncaught
    ValueError ("internal error", exit 1); whether the number is cut by a chunk's end or not, it is
    an :class:`InputError` naming the file."""
    from showo2_cli.errors import InputError
    from showo2_cli.training.records import iter_json_array

    path = tmp_path / "r.json"
    path.write_text('[{"caption": "a"}, {"caption": "b", "id": ' + "1" * (DIGITS + 1) + "}]", encoding="utf-8")
    items = iter_json_array(path, chunk=chunk)
    assert next(items) == {"caption": "a"}
    with pytest.raises(InputError, match=f"holds a number of more than {DIGITS:,} digits"):
        next(items)


def test_a_seeds_list_holding_none_is_a_usage_error_before_any_work():
    """``GenerateOptions(seeds=[None])`` passed validation (``check_seed`` takes None as "no
    --seed") and reached ``torch.Generator.manual_seed``: "RuntimeError: manual_seed expected a
    long, but got NoneType" after the model ran. Each of seeds is a seed."""
    from showo2_cli.errors import UsageError
    from showo2_cli.options import GenerateOptions

    for seeds in ([None], [3, None]):
        with pytest.raises(UsageError, match="each of seeds must be a whole number .* got None"):
            GenerateOptions(seeds=seeds).validate()
    GenerateOptions(seeds=[0, 2**63 - 1]).validate()


def test_chat_t2i_word_splitting_is_linear_in_the_line():
    """``_prompt_words`` looked for a quoted word's closing quote with ``(["'])(.*?)\\2(?=\\s|$)``
    from every word opening with a quote: over ``'x 'x 'x ...`` (no quote closes a word) each
    search ran to the line's end, 13 s for a 48 KB line and hours for the 1 MiB a chat line may be.
    The closing quote is looked for once per stretch of the line; counted here (no timing): the
    characters the closing-quote searches scan stay within a few times the line's length."""
    from showo2_cli.cli import chat

    line = "'x \"y " * 20_000  # 120,000 characters, 40,000 words opening with a quote, none closing
    scanned = []

    class Counting:  # the closing-quote pattern, counting the characters each search may scan
        def __init__(self, pattern):
            self.pattern = pattern

        def search(self, text, pos=0):
            match = self.pattern.search(text, pos)
            scanned.append((match.end() if match else len(text)) - pos)
            return match

    saved = dict(chat._CLOSING)
    try:
        chat._CLOSING.update({q: Counting(p) for q, p in saved.items()})
        words = chat._prompt_words(line)
    finally:
        chat._CLOSING.update(saved)
    assert words == line.split()
    assert sum(scanned) <= 3 * len(line)
    # what a shell reads stays: quoted words, a glued option value, quotes inside words, backslashes
    assert chat._prompt_words("""'a red circle' -o="out file.png" a cat's 5" C:\\Users my\\ file""") == [
        "a red circle", "-o=out file.png", "a", "cat's", '5"', "C:\\Users", "my file"]
    assert chat._prompt_words("'' \"\" 'open") == ["", "", "'open"]


def test_a_request_for_another_model_is_told_a_few_of_thousands_of_served_names():
    """A request naming a model not served was answered with every served name in its 404 message:
    with 3,000 ``--served-model-name`` aliases of 200 characters and a 100,000-character id, one
    mistyped ``model`` got a 1.3 MB error. It names four, each shortened, and how many more (all
    of them in ``/v1/models``)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from showo2_cli.loading import load
    from showo2_cli.serve import ServerConfig
    from showo2_cli.serve.app import create_app

    names = tuple(f"name-{i}-" + "é" * 200 for i in range(3000))
    config = ServerConfig(model_id="x" * 100_000, model_aliases=names)
    config.validate()
    with TestClient(create_app(load("demo"), config)) as http:
        answer = http.get("/v1/models/nope")
        assert answer.status_code == 404 and len(answer.content) < 1000
        message = answer.json()["error"]["message"]
        assert message.startswith("model 'nope' is not served here (this server serves 'xxx")
        assert message.endswith("and 2,997 more names: GET /v1/models lists them)") and "name-3-" not in message
        assert http.get("/v1/models/" + names[2999]).status_code == 200
        assert len(http.get("/v1/models").json()["data"]) == 3001


def test_the_line_of_a_bad_record_is_counted_without_a_list_of_line_ends(tmp_path):
    """The line number in a prompts file's error was ``len(re.findall(line ends, text[:index]))``:
    a copy of the text before the record and a list of every line end (540 MB and 14 s for a
    record after 67 million blank lines of a 64 MiB ``.jsonl``). They are counted in place: the
    memory traced while counting stays under a megabyte (the old list: 8 bytes a line), and the
    line is the same (``\\n``, ``\\r\\n`` and a lone ``\\r`` each end one)."""
    import tracemalloc

    from showo2_cli.errors import InputError
    from showo2_cli.saving import _line_at, read_prompts

    text = '"a"\r\n' + "\n" * 2_000_000 + "\r\r\n" + "x\n"
    path = tmp_path / "p.jsonl"
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(InputError, match=f"line {2_000_000 + 4}: not valid JSON"):
        read_prompts(prompts_file=path)
    tracemalloc.start()
    try:
        line = _line_at(text, len(text) - 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert line == 2_000_000 + 4 and peak < 2**20


def test_chat_file_names_are_not_read_as_shell_words_past_any_paths_length(monkeypatch, tmp_path):
    """``/image`` and ``/save`` read their file name with ``shlex.split``, which builds a word a
    character at a time, quadratic in its length: a 1 MiB line of ``a\\ a\\ ...`` took 11.8 s in
    ``/image`` and 5.8 s in ``/save`` (21 s for both through ``showo2 chat``, against 6.3 s now,
    most of it the model's load). Text longer than any quoted path (64 Ki characters) is split at
    blanks; a quoted or escaped name as terminals paste it is read as before."""
    from showo2_cli.cli import chat

    given = []
    split = chat.shlex.split
    monkeypatch.setattr(chat.shlex, "split", lambda text, *a, **k: given.append(len(text)) or split(text, *a, **k))
    line = "a\\ " * 350_000  # 1 MiB
    assert str(chat._attached_path(line)) == line.strip()  # (no such file: said by the reader as typed)
    assert chat._split(line) == ["a\\"] * 350_000
    assert all(n <= 1 << 16 for n in given)
    photo = tmp_path / "my photo.png"
    photo.write_bytes(b"")
    assert chat._attached_path(str(photo).replace(" ", "\\ ")) == photo
    assert chat._attached_path(f"'{photo}'") == photo
    assert chat._split("'a b' --overwrite") == ["a b", "--overwrite"]
