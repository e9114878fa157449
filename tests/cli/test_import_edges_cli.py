#!/usr/bin/env python3
"""Import and export at the edges (issue 9, items 4 and 13): nothing is dropped silently.

Usage: test_import_edges_cli.py PATH_TO_JVDB

One case per finding: a CSV first row of nan/inf/1e999/empty was taken for a header and dropped;
hex floats were accepted; export did not give back every id and metadata byte for byte; npy headers
with absurd shapes or a shape the file does not hold were trusted.  Every refused import must leave
the database as it was.  Reuses the helpers of test_cli.py.
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli  # noqa: E402
from test_cli import test, write_npy, write_text  # noqa: E402

test_cli.TESTS.clear()  # run only the cases below


def meta_bytes(e, name, vid):
    """The stored metadata text, exactly: `get` prints it raw after 'metadata: '."""
    _, out, _ = e.run("get", name, "--", vid)
    return out.split("metadata: ", 1)[1][:-1]


def refused(e, name, *args, contains=(), code=1):
    """An import (or put) that must fail and leave database `name` as it was."""
    before = e.contents(name)
    err = e.fail(code, *args, contains=contains)
    assert e.contents(name) == before, f"{args}: a refused command changed the database\n{err}"
    return err


# ---------------------------------------------------------------- csv header or data

@test
def csv_first_row_of_nonnumbers_is_data_not_a_header(e):
    e.create("v", 2)
    e.run("put", "v", "keep", "--vector", "9,9")
    cases = [("a,nan,1", "'nan' is not a finite number"), ("a,inf,1", "'inf' is not a finite number"),
             ("a,-Infinity,1", "not a finite number"), ("a,1e999,1", "'1e999' is outside the float32 range"),
             ("a,,1", "'' is empty"), ("a, ,1", "is empty"), ("a,1,", "column 3 (value 2): '' is empty"),
             ("a,0x10,1", "'0x10' is a hexadecimal number")]
    for first, what in cases:
        write_text(e.path("f.csv"), first + "\nb,1,2\nc,3,4\n")
        refused(e, "v", "import", "v", e.path("f.csv"), contains=("f.csv: line 1: column", what, "0 vectors imported"))
    # a header with one numeric-looking name is data too, and its bad value is named
    write_text(e.path("h.csv"), "id,x,2\nb,1,2\n")
    refused(e, "v", "import", "v", e.path("h.csv"), contains=("line 1: column 2 (value 1): 'x'",))


@test
def csv_header_skip_is_reported(e):
    e.create("v", 2)
    write_text(e.path("h.csv"), "id,x,y,metadata\na,1,2,\n")
    _, out, err = e.run("import", "v", e.path("h.csv"))
    assert "imported 1 vectors" in out, out
    assert err == f"jvdb: {e.path('h.csv')}: skipped header line 1\n", repr(err)
    # after blank lines the header's own line is named; names may be any words, also non-ASCII
    write_text(e.path("h2.csv"), "\n\nname,größe,_y\nb,1,2\n")
    _, _, err = e.run("import", "v", e.path("h2.csv"))
    assert "skipped header line 3" in err, err
    # no header: nothing said
    write_text(e.path("n.csv"), "c,1,2\n")
    _, _, err = e.run("import", "v", e.path("n.csv"))
    assert err == "", err
    assert e.count() == 3


# ---------------------------------------------------------------- decimal numbers only

@test
def hex_and_nonfinite_numbers_refused_everywhere(e):
    e.create("v", 2)
    e.run("put", "v", "keep", "--vector", "9,9")
    for vec, what in [("0x10,1", "'0x10') is a hexadecimal number"), ("1,-0X1p3", "hexadecimal"),
                      ("1,infinity", "not a finite number"), ("NAN,1", "not a finite number"),
                      ("1,1e39", "outside the float32 range"), ("1,1e999", "outside the float32 range"),
                      ("1,1e", "is not a decimal number"), ("1,.", "is not a decimal number")]:
        refused(e, "v", "put", "v", "x", "--vector", vec, code=2, contains=("--vector: value", what))
    # accepted decimal spellings: signs, leading or trailing point, exponents, underflow to zero
    e.run("put", "v", "d", "--vector", "+.5,-5.e-1")
    assert e.json("get", "v", "d")["values"] == [0.5, -0.5]
    e.run("put", "v", "z", "--vector", "1e-50,1E+2")
    assert e.json("get", "v", "z")["values"] == [0.0, 100.0]
    # csv goes through the same parser
    write_text(e.path("x.csv"), "a,1,2\nb,1,0x1A\n")
    refused(e, "v", "import", "v", e.path("x.csv"), contains=("line 2: column 3 (value 2): '0x1A' is a hexadecimal",))
    # search takes its query vector the same way, and other numeric options too
    e.fail(2, "search", "v", "--vector", "0x1,2", contains="hexadecimal")
    e.fail(2, "search", "v", "--vector", "1,2", "--threshold", "0x1", contains="--threshold '0x1'")
    e.fail(2, "compact", "v", "--max-seconds", "0x10", contains="--max-seconds '0x10'")
    # jsonl numbers are read by jansson, which refuses hex and an overflowing exponent
    write_text(e.path("h.jsonl"), '{"id": "a", "values": [0x10, 1]}\n')
    refused(e, "v", "import", "v", e.path("h.jsonl"), contains=("line 1", "invalid JSON"))
    write_text(e.path("o.jsonl"), '{"id": "a", "values": [1e999, 1]}\n')
    refused(e, "v", "import", "v", e.path("o.jsonl"), contains=("line 1", "real number overflow near '1e999'"))
    write_text(e.path("f.jsonl"), '{"id": "a", "values": [1e39, 1]}\n')
    refused(e, "v", "import", "v", e.path("f.jsonl"), contains=("line 1", "float32 range"))


# ---------------------------------------------------------------- export -> import, byte for byte

IDS = ['say "hi"', "a,b", " lead and trail ", "\u00e9t\u00e9 \u65e5\u672c \U0001F600", "back\\slash",
       '",', "x"]
METAS = [
    '{"note": "line1\\nline2", "q": "a \\"b\\", c"}',        # newline and quotes inside strings
    '{"a": 0.1, "b": 1e5, "c": [1.50, -0.0]}',                 # numbers jansson would reprint
    '{"e": "\\u00e9", "slash": "\\/"}',                        # escapes jansson would undo
    '{ "spaced" :  true ,\t"k": null }',                      # whitespace between tokens
    '{"\u00fc": "\u65e5\u672c", "deep": {"x": [{"y": "}"}]}}',  # non-ASCII text, brackets in strings
    '{}', None, '{"n": 1}',
]


def load_edge_rows(e, name):
    e.create(name, 2)
    for i, (vid, meta) in enumerate(zip(IDS, METAS)):
        args = ["put", name, "--vector", f"{i},0.1"] + (["--meta", meta] if meta else []) + ["--", vid]
        e.run(*args)


def stored(e, name):
    return {vid: (json.loads(e.run("get", name, "--json", "--", vid)[1])["values"], meta_bytes(e, name, vid))
            for vid in IDS}


@test
def export_import_round_trips_every_id_and_metadata(e):
    load_edge_rows(e, "v")
    want = stored(e, "v")
    for i, vid in enumerate(IDS):
        assert want[vid][1] == (METAS[i] or "(none)"), (vid, want[vid][1])
    for fmt in ("csv", "jsonl"):
        e.run("export", "v", e.path(f"out.{fmt}"))
        e.create(f"w{fmt}", 2)
        e.run("import", f"w{fmt}", e.path(f"out.{fmt}"))
        assert e.count(f"w{fmt}") == len(IDS)
        assert stored(e, f"w{fmt}") == want, f"{fmt} round trip changed ids or metadata"
    # export -> import -> export gives the same jsonl lines (order aside)
    e.run("export", "wjsonl", e.path("again.jsonl"))
    first, second = (sorted(open(e.path(n), "rb").read().splitlines()) for n in ("out.jsonl", "again.jsonl"))
    assert first == second, "jsonl export -> import -> export differs"


@test
def csv_keeps_line_breaks_inside_quoted_fields(e):
    e.create("v", 2)
    meta = '{"a": 1,\n  "b": "x\\ny",\r\n  "c": [1,\n 2]}'  # raw line breaks between JSON tokens
    e.run("put", "v", "m", "--vector", "1,2", "--meta", meta)
    e.run("export", "v", e.path("o.csv"))
    raw = open(e.path("o.csv"), "rb").read()
    assert b'"{""a"": 1,\n  ""b"": ""x\\ny"",\r\n  ""c"": [1,\n 2]}"\n' in raw, raw
    e.create("w", 2)
    e.run("import", "w", e.path("o.csv"))
    assert meta_bytes(e, "w", "m") == meta
    # a quoted field may hold commas, quotes and line breaks; a lone quote inside an unquoted field
    # is a plain character and does not swallow the lines after it
    write_text(e.path("q.csv"), 'ab"c,1,2\n"x, ""y""",3,4,"{""k"":\n""v""}"\nlast,5,6\n')
    e.create("q", 2)
    e.run("import", "q", e.path("q.csv"))
    assert sorted(e.contents("q")) == ['ab"c', 'last', 'x, "y"'], e.contents("q")
    assert meta_bytes(e, "q", 'x, "y"') == '{"k":\n"v"}'
    # an unclosed quote is named at the line it opens, and nothing is imported
    write_text(e.path("u.csv"), 'a,1,2\n"b,3,4\nc,5,6\n')
    refused(e, "q", "import", "q", e.path("u.csv"), contains=("line 2", "never closed"))


@test
def ids_outside_the_alphabet_refused_at_their_line(e):
    # ids are UTF-8 without control characters (the library's rule): what export can always write
    e.create("v", 2)
    e.run("put", "v", "keep", "--vector", "9,9")
    write_text(e.path("t.jsonl"), '{"id": "ok", "values": [1, 2]}\n{"id": "a\\tb", "values": [1, 2]}\n')
    refused(e, "v", "import", "v", e.path("t.jsonl"), contains=("line 2", "control character"))
    with open(e.path("u.csv"), "wb") as f:
        f.write(b"ok,1,2\nbad\xff,1,2\n")
    refused(e, "v", "import", "v", e.path("u.csv"), contains=("u.csv: line 2: id is not valid UTF-8",))


@test
def fvecs_export_says_ids_are_not_kept(e):
    e.create("v", 2)
    e.run("put", "v", "named", "--vector", "1,2")
    _, out, err = e.run("export", "v", e.path("o.fvecs"))
    assert "exported 1" in out and "ids and metadata are not written" in err, (out, err)


# ---------------------------------------------------------------- npy shapes

@test
def npy_absurd_shapes_refused_before_reading(e):
    e.create("v", 4)
    e.run("put", "v", "keep", "--vector", "1,2,3,4")
    rows = [[float(i)] * 4 for i in range(3)]
    cases = [((2 ** 62, 4), "impossible"), ((2 ** 64 + 5, 4), "impossible"),
             ((-1, 4), "non-negative sizes"), ((3, -4), "non-negative sizes"),
             ((10, 4), "(10, 4) needs 160 bytes of data but the file has 48"),
             ((2, 4), "(2, 4) needs 32 bytes of data but the file has 48")]
    for shape, what in cases:
        write_npy(e.path("s.npy"), rows, shape=shape, dim=4)
        refused(e, "v", "import", "v", e.path("s.npy"), contains=(what, "nothing imported"))
    write_npy(e.path("big.npy"), [], shape=(2 ** 62, 128), dim=128)
    e.create("d128", 128)
    refused(e, "d128", "import", "d128", e.path("big.npy"), contains=("impossible", "nothing imported"))
    # through a pipe the size is unknown in advance: rows beyond the shape are still refused
    write_npy(e.path("long.npy"), rows, shape=(2, 4), dim=4)
    _, _, err = e.run("import", "v", "-", "--format", "npy", stdin=open(e.path("long.npy"), "rb").read(), expect=1)
    assert "goes on after the 2 rows" in err and "0 vectors imported" in err, err
    assert e.count() == 1


if __name__ == "__main__":
    sys.exit(test_cli.main())
