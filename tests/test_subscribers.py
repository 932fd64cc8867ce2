"""The subscriber list: who gets the digest, and every mistake in the file reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import CatalogueError
from digest.send import subscribers
from digest.send.subscribers import Subscriber

ROOT = Path(__file__).resolve().parent.parent
DECLARED = ["research", "people", "events"]


def load(tmp_path: Path, content: str | bytes) -> subscribers.SubscriberList:
    path = tmp_path / "subscribers.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return subscribers.load(path, DECLARED, "subscribers.csv")


def problems(tmp_path: Path, content: str | bytes) -> list[str]:
    with pytest.raises(CatalogueError) as raised:
        load(tmp_path, content)
    return [str(p) for p in raised.value.problems]


def test_valid_list_in_file_order(tmp_path: Path) -> None:
    """Subscribers come out in the order the office keeps them, with names and choices."""
    listed = load(
        tmp_path,
        "email,name,categories\n"
        "chan@example.org,Prof. Chan Tai-man,\n"
        "Lee@Example.ORG,,research; people\n"
        "ng@example.org,Dr. Ng,events\n",
    )
    assert listed.subscribers == (
        Subscriber("chan@example.org", "Prof. Chan Tai-man", None, 2),
        Subscriber("Lee@example.org", None, frozenset({"research", "people"}), 3),
        Subscriber("ng@example.org", "Dr. Ng", frozenset({"events"}), 4),
    )
    assert listed.duplicates == ()
    assert listed.subscribers[1].key == "lee@example.org"


def test_two_column_header_means_every_category(tmp_path: Path) -> None:
    """A list without a categories column sends everyone every category."""
    listed = load(tmp_path, "email,name\nchan@example.org,Chan\n")
    assert listed.subscribers == (Subscriber("chan@example.org", "Chan", None, 2),)


def test_bundled_list_loads(tmp_path: Path) -> None:
    """The list shipped with the repository is valid: 12 subscribers, no duplicates."""
    declared = [
        "institutional-advancement",
        "engagement",
        "recognition",
        "engagement-and-visit",
        "collaboration",
        "visit",
        "achievement",
    ]
    listed = subscribers.load(ROOT / "subscribers.csv", declared)
    assert (len(listed.subscribers), listed.duplicates) == (12, ())
    assert listed.subscribers[7].name == "Yip, Suk-yee"


def test_every_bad_row_is_reported_at_once(tmp_path: Path) -> None:
    """The office fixes the whole file in one pass: every bad row, with its line and field."""
    found = problems(
        tmp_path,
        "email,name,categories\n"
        "chan@example.org,Chan,\n"
        "not-an-address,X,\n"
        ",No address,\n"
        "lee@example.org,Lee,research;nope\n"
        "ng@example.org,Ng,people\n"
        "wong@example,Wong,\n",
    )
    assert found == [
        "subscribers.csv:3: email: 'not-an-address' is not an email address: "
        "An email address must have an @-sign.",
        "subscribers.csv:4: email: '' is not an email address: "
        "An email address must have an @-sign.",
        "subscribers.csv:5: categories: 'nope' not declared in the catalogue; "
        "declared: events, people, research",
        "subscribers.csv:7: email: 'wong@example' is not an email address: "
        "The part after the @-sign is not valid. It should have a period.",
    ]


def test_invalid_rows_can_be_set_aside_with_their_lines(tmp_path: Path) -> None:
    """Loaded not strictly, a list with bad rows gives its good rows and names each bad one."""
    path = tmp_path / "subscribers.csv"
    path.write_text(
        "email,name,categories\n"
        "chan@example.org,Chan,\n"
        "x@,X,\n"
        "lee@example.org,Lee,nope\n"
        "LEE@example.org,Lee again,\n"
        "ng@example.org,Ng,\n",
        encoding="utf-8",
    )

    listed = subscribers.load(path, DECLARED, "subscribers.csv", strict=False)

    assert [(s.email, s.line) for s in listed.subscribers] == [
        ("chan@example.org", 2),
        ("LEE@example.org", 5),  # the first valid row of that address
        ("ng@example.org", 6),
    ]
    assert [str(problem) for problem in listed.invalid] == [
        "subscribers.csv:3: email: 'x@' is not an email address: "
        "There must be something after the @-sign.",
        "subscribers.csv:4: categories: 'nope' not declared in the catalogue; "
        "declared: events, people, research",
    ]
    assert listed.invalid_lines == [3, 4]
    assert listed.duplicates == ()
    with pytest.raises(CatalogueError) as raised:
        subscribers.load(path, DECLARED, "subscribers.csv")
    assert raised.value.problems == listed.invalid


def test_a_file_not_made_of_rows_is_refused_even_when_not_strict(tmp_path: Path) -> None:
    """A stray quote hides the rows after it: nobody is sent anything rather than half the list."""
    path = tmp_path / "subscribers.csv"
    path.write_text('email,name\nx@,X\nchan@example.org,"Chan\n' + "p@example.org,P\n" * 20000)
    with pytest.raises(CatalogueError) as raised:
        subscribers.load(path, DECLARED, "subscribers.csv", strict=False)
    assert [str(problem) for problem in raised.value.problems] == [
        "subscribers.csv:2: email: 'x@' is not an email address: "
        "There must be something after the @-sign.",
        "subscribers.csv:3: cannot be read as CSV (field larger than field limit (131072)); a "
        'double quote that opens a field must close it: look for a stray " on this line',
    ]


def test_duplicates_are_sent_once_first_row_wins(tmp_path: Path) -> None:
    """Someone listed twice, in any letter case, gets one copy, under their first row; the office
    is told which rows were merged into which."""
    listed = load(
        tmp_path,
        "email,name\n"
        "Chan@Example.org,First\n"
        "lee@example.org,Lee\n"
        "chan@example.ORG,Second\n"
        "CHAN@EXAMPLE.ORG,Third\n",
    )
    assert [(s.email, s.name) for s in listed.subscribers] == [
        ("Chan@example.org", "First"),
        ("lee@example.org", "Lee"),
    ]
    assert [str(problem) for problem in listed.duplicates] == [
        "subscribers.csv:4: email: 'chan@example.ORG' is a duplicate of line 2 (addresses compare "
        "case-insensitively); sent once, with line 2's name and categories",
        "subscribers.csv:5: email: 'CHAN@EXAMPLE.ORG' is a duplicate of line 2 (addresses compare "
        "case-insensitively); sent once, with line 2's name and categories",
    ]


@pytest.mark.parametrize(
    "header",
    ["mail,name", "email", "name,email", "email,name,city", "email,name,name", "email;name"],
)
def test_wrong_header_is_refused(tmp_path: Path, header: str) -> None:
    """A file without the expected header is refused before any row is guessed at."""
    assert problems(tmp_path, f"{header}\nchan@example.org,Chan\n") == [
        f"subscribers.csv:1: the header is {header!r}; it must be email,name or "
        "email,name,categories"
    ]


def test_header_is_case_and_space_tolerant(tmp_path: Path) -> None:
    """' Email , Name ' as typed by a person is still the header."""
    listed = load(tmp_path, " Email , Name \nchan@example.org,Chan\n")
    assert [s.email for s in listed.subscribers] == ["chan@example.org"]


def test_empty_file(tmp_path: Path) -> None:
    """An empty file is explained, not taken as 'nobody to send to'."""
    assert problems(tmp_path, "") == [
        "subscribers.csv: the list is empty; its first line is email,name"
    ]


def test_header_only_is_an_empty_list(tmp_path: Path) -> None:
    """A list with a header and no one yet is valid and sends to nobody."""
    assert load(tmp_path, "email,name\n").subscribers == ()


def test_non_utf8_byte_names_its_line(tmp_path: Path) -> None:
    """A list saved in a legacy encoding is refused with the line of the first bad byte."""
    content = b"email,name\nchan@example.org,Chan\ngarcia@example.org,Mar\xeda\n"
    assert problems(tmp_path, content) == [
        "subscribers.csv:3: byte 0xed is not UTF-8; save the file as UTF-8"
    ]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A list saved by Excel as 'CSV UTF-8' (with a BOM) reads like any other."""
    listed = load(tmp_path, "\ufeffemail,name\r\nchan@example.org,Chan\r\n".encode())
    assert [(s.email, s.name, s.line) for s in listed.subscribers] == [
        ("chan@example.org", "Chan", 2)
    ]


def test_line_break_inside_quoted_name_is_refused_at_its_line(tmp_path: Path) -> None:
    """A name that spans lines could forge headers: refused, at the line where its row starts."""
    found = problems(
        tmp_path,
        'email,name\nchan@example.org,Chan\nlee@example.org,"Lee\nBcc: x@example.net"\n'
        "not-an-address,Ng\n",
    )
    assert found == [
        "subscribers.csv:3: name: contains U+000A, a control character or line break; remove it",
        "subscribers.csv:5: email: 'not-an-address' is not an email address: "
        "An email address must have an @-sign.",
    ]


@pytest.mark.parametrize(
    ("character", "code"),
    [("\t", "U+0009"), ("\x85", "U+0085"), ("\u2028", "U+2028"), ("\x00", "U+0000")],
)
def test_control_characters_in_names_are_refused(tmp_path: Path, character: str, code: str) -> None:
    """Invisible characters that mail programs treat as line breaks never reach the To header."""
    assert problems(tmp_path, f'email,name\nchan@example.org,"A{character}B"\n') == [
        f"subscribers.csv:2: name: contains {code}, a control character or line break; remove it"
    ]


def test_quoted_name_with_comma(tmp_path: Path) -> None:
    """'Yip, Suk-yee' in quotes is one name, not two fields."""
    listed = load(tmp_path, 'email,name\nyip@example.org,"Yip, Suk-yee"\n')
    assert [s.name for s in listed.subscribers] == ["Yip, Suk-yee"]


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    """Blank lines between subscribers do not matter, and later lines keep their numbers."""
    listed = load(tmp_path, "email,name\n\nchan@example.org,Chan\n , \n\nlee@example.org,Lee\n\n")
    assert [(s.email, s.line) for s in listed.subscribers] == [
        ("chan@example.org", 3),
        ("lee@example.org", 6),
    ]


def test_too_many_fields(tmp_path: Path) -> None:
    """An unquoted comma in a name is pointed out, with the fix."""
    assert problems(tmp_path, "email,name\nyip@example.org,Yip, Suk-yee\n") == [
        "subscribers.csv:2: has 3 fields but the header names 2; put a name that contains a "
        "comma in double quotes"
    ]


def test_non_ascii_local_part_is_refused(tmp_path: Path) -> None:
    """An address the digest cannot send to is reported now, not stuck in every send."""
    assert problems(tmp_path, "email,name\njosé@example.org,José\n") == [
        "subscribers.csv:2: email: 'josé@example.org' is not an email address: "
        "Internationalized characters before the @-sign are not supported: 'é'."
    ]


def test_international_domain_is_kept_in_ascii(tmp_path: Path) -> None:
    """A domain written in Unicode or in punycode is one address, carried in ASCII."""
    listed = load(tmp_path, "email,name\na@bücher.example,A\nA@xn--bcher-kva.example,B\n")
    assert [s.email for s in listed.subscribers] == ["a@xn--bcher-kva.example"]
    assert [problem.line for problem in listed.duplicates] == [3]


def test_stray_quote_in_a_long_file_is_reported(tmp_path: Path) -> None:
    """An unclosed quote that swallows a long list is located, not a Python traceback."""
    rows = "".join(f"p{i}@example.org,Person {i}\n" for i in range(6000))
    found = problems(tmp_path, f'email,name\nnot-an-address,X\nchan@example.org,"Chan\n{rows}')
    assert found == [
        "subscribers.csv:2: email: 'not-an-address' is not an email address: "
        "An email address must have an @-sign.",
        "subscribers.csv:3: cannot be read as CSV (field larger than field limit (131072)); "
        'a double quote that opens a field must close it: look for a stray " on this line',
    ]


def test_unreadable_file_is_explained(tmp_path: Path) -> None:
    """A missing list names the file and the reason."""
    with pytest.raises(CatalogueError) as raised:
        subscribers.load(tmp_path / "missing.csv", DECLARED, "subscribers.csv")
    assert str(raised.value) == ("subscribers.csv: cannot read the list: No such file or directory")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("Chan.Taiman@Example.org", "Chan.Taiman@example.org"),
        ("lee@bücher.example", "lee@xn--bcher-kva.example"),
    ],
)
def test_one_address_check_for_rows_and_typed_addresses(typed: str, expected: str) -> None:
    """A test copy's address and a list row are read alike: the domain lower-cased, in ASCII."""
    assert subscribers.address(typed) == expected
    with pytest.raises(ValueError, match="is not an email address"):
        subscribers.address("x@")


def plain_verdict(text: str) -> str:
    """Return what email_validator itself makes of `text`: the address, or its refusal."""
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return f"refused: {text!r} is not an email address: {exc}"
    return str(checked.ascii_email or checked.normalized)


def verdict(text: str) -> str:
    """Return what `subscribers.address` makes of `text`, in `plain_verdict`'s terms."""
    try:
        return subscribers.address(text)
    except ValueError as exc:
        return f"refused: {exc}"


# Pieces that sit on the edges of the validator's rules: capitals and role names it lower-cases,
# quoting, display names, a second @, non-ASCII and combining marks, NFC, IDNA and Punycode,
# special-use and numeric top-level domains, hyphens and dots out of place, fullwidth dots.
LOCAL_PIECES = st.sampled_from(
    [
        "a",
        "chan",
        "Chan",
        "info",
        "Info",
        "POSTMASTER",
        "news",
        "p.q",
        "x+tag",
        "o'neil",
        "a_b",
        "~{|}",
        "é",
        "e\u0301",
        "\u0301",
        '"',
        '"q q"',
        "\\",
        "<",
        ">",
        " ",
        "..",
        ".",
        "@",
        "-",
        "9",
    ]
)
DOMAIN_PIECES = st.sampled_from(
    [
        "example.org",
        "Example.ORG",
        "faculty.example.org",
        "bücher.example",
        "xn--bcher-kva.example",
        "xn--a.example",
        "test",
        "a.test",
        "localhost",
        "x.invalid",
        "x.local",
        "x.onion",
        "1.23",
        "a-b.org",
        "-a.org",
        "a-.org",
        "ab--cd.org",
        "a..org",
        "a.org.",
        ".a.org",
        "ａ.org",
        "a。org",
        "a\u0301.org",
        "\u0301a.org",
        "[127.0.0.1]",
        "a.org>",
        " a.org",
        "a.ORG",
        "b@c.org",
        "",
        "é.org",
        "e\u0301.org",
        "ß.de",
        "\u05d0\u05d1.com",
        "1.\u05d0\u05d1.com",
        "a" * 63 + ".org",
        "a" * 64 + ".org",
    ]
)
locals_ = st.one_of(
    st.lists(LOCAL_PIECES, max_size=4).map("".join),
    st.text(st.sampled_from("abcXYZ09.+-_'\"@\\ é"), max_size=12),
    st.integers(60, 70).map(lambda n: "a" * n),
)
domains = st.one_of(
    DOMAIN_PIECES,
    st.lists(DOMAIN_PIECES, min_size=1, max_size=3).map(".".join),
    st.text(st.sampled_from("abcXYZ09.-éß@\u0301"), max_size=12),
    st.integers(1, 250).map(lambda n: ("a" * 60 + ".") * (n // 61) + "b" * (n % 61) + ".org"),
)


@settings(max_examples=1500, deadline=None)
@given(local=locals_, domain=domains)
def test_address_is_exactly_the_validators_verdict(local: str, domain: str) -> None:
    """The quick answer for a list's rows never accepts, refuses or spells one differently."""
    text = f"{local}@{domain}"
    assert verdict(text) == plain_verdict(text)
    assert verdict(text) == plain_verdict(text)  # again, with the domain's verdict remembered


# A domain whose UTF-8 form (194 bytes) is longer than its Punycode (164): the address's length
# limit falls where the longer form says, typed either way.
CJK = ".".join(["中文大学研究院" * 3] * 3) + ".hk"
CJK_ASCII = validate_email(f"a@{CJK}", check_deliverability=False).ascii_domain
# Fullwidth letters: as typed (191 bytes) longer than either normalised form (69).
FULLWIDTH = "ａ" * 60 + "." + "ａ" * 2 + ".org"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 59 + "@" + CJK,
        "a" * 60 + "@" + CJK,
        "a" * 59 + "@" + CJK_ASCII,
        "a" * 60 + "@" + CJK_ASCII,
        "b" * 62 + "@" + FULLWIDTH,
        "b" * 63 + "@" + FULLWIDTH,
        "a" * 64 + "@example.org",
        "a" * 65 + "@example.org",
        "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 59 + ".org",  # 254 in all
        "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 60 + ".org",  # 255
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57 + ".org",  # domain 253
        "ab@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57 + ".org",
        "x" * 40 + "@" + "ü" * 50 + ".example",  # longer in ASCII (Punycode) than as typed
        "info@example.org",
        "Info@Example.ORG",
        "chan@bücher.example",
        "chan@xn--bcher-kva.example",
        "chan@a.test",
        "chan@localhost",
        "chan@a@b.org",
        '"chan"@example.org',
        "Chan <chan@example.org>",
        "chan@example.org ",
        "chan@ex\u0301ample.org",
        "chan@\u0338example.org",
        "chan@example.123",
        "chan@",
        "@example.org",
    ],
)
def test_address_edges_are_the_validators(text: str) -> None:
    """At each length limit and odd form, a row is accepted or refused as the validator says."""
    verdict("warm@" + text.rpartition("@")[2])  # the domain's verdict remembered first
    assert verdict(text) == plain_verdict(text)


def test_a_domain_is_checked_once_for_the_whole_list(tmp_path: Path) -> None:
    """A long list of one faculty's addresses is checked without its domain checked per row."""
    subscribers._domain.cache_clear()
    rows = "".join(f"person{i}@faculty.example.org,P {i}\n" for i in range(200))
    listed = load(tmp_path, f"email,name\n{rows}")
    assert len(listed.subscribers) == 200
    info = subscribers._domain.cache_info()
    assert (info.misses, info.hits) == (1, 199)


def test_long_junk_addresses_are_not_remembered() -> None:
    """A list of huge junk addresses is refused without the program keeping each one in memory."""
    subscribers._domain.cache_clear()
    junk = "chan@" + "b" * 5000 + ".org"
    assert verdict(junk) == plain_verdict(junk)
    assert subscribers._domain.cache_info().currsize == 0
