"""The finding lexicon (knowledge/lexicon.toml): one table feeds the vocabulary, the labeler and the router,
and a malformed table fails at load naming the file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knowledge.lexicon import DEFAULT_PATH, LexiconError, lexicon, load_lexicon, term_key
from knowledge.vocabulary import DISPLAY_NAMES, FINDINGS, PARENTS, SYNONYMS, XRV_LABELS, normalize

_MINIMAL = """\
version = 1
[fragments]
GAP = '[a-z ]{0,10}?'

[finding.no_finding]
display = "No finding"
synonyms = ['normal']

[finding.pneumothorax]
display = "Pneumothorax"
synonyms = ['ptx']
router_phrases = ['ptx', 'dropped lung']
router_fuzzy = ['pneumothorax']
labeler_mentions = ['pneumothorax{GAP}']
labeler_keywords = ['pneumothora']

[finding.pleural_effusion]
display = "Pleural effusion"
synonyms = ['effusion']

[label_set.demo]
"PTX" = "pneumothorax"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "lexicon.toml"
    p.write_text(text, encoding="utf-8")
    return p


def _line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_the_product_lexicon_feeds_the_vocabulary() -> None:
    lex = lexicon()
    assert lex.path == DEFAULT_PATH
    assert tuple(lex.findings) == FINDINGS
    assert DISPLAY_NAMES == {f: e.display for f, e in lex.findings.items()}
    assert PARENTS["nodule"] == "lung_lesion"
    assert list(XRV_LABELS)[:3] == ["Atelectasis", "Consolidation", "Infiltration"]  # the set's own order
    for fid, e in lex.findings.items():
        for s in e.synonyms:
            assert SYNONYMS[term_key(s)] == fid
            assert normalize(s) == fid, s


def test_labeler_and_router_read_the_same_table(tmp_path: Path) -> None:
    """A term added to the lexicon reaches the labeler's and the router's compiled rules."""
    from agents.routing import mentions as router
    from knowledge import labeler

    lex = lexicon()
    pneu = lex.findings["pneumothorax"]
    rule = next(r for r in labeler._RULES if r.findings == ("pneumothorax",) and r.kind == "mention")
    for p in pneu.labeler_mentions:
        assert p in rule.regex.pattern
    assert rule.keywords == pneu.labeler_keywords
    rx = next(rx for rx, f in router._PHRASE_RES if f == "pneumothorax")
    assert all(p in rx.pattern for p in pneu.router_phrases)
    assert router._FUZZY_LEXICON["pneumothoraces"] == "pneumothorax"


def test_minimal_lexicon_loads_and_expands_fragments(tmp_path: Path) -> None:
    lex = load_lexicon(_write(tmp_path, _MINIMAL))
    assert list(lex.findings) == ["no_finding", "pneumothorax", "pleural_effusion"]
    assert lex.findings["pneumothorax"].labeler_mentions == ("pneumothorax[a-z ]{0,10}?",)
    assert lex.label_map("demo") == {"PTX": "pneumothorax"}
    assert lex.findings["pneumothorax"].snomed is None


@pytest.mark.parametrize(
    ("edit", "needle", "message"),
    [
        (("'dropped lung'", "'dropped (lung'"), "dropped (lung", "bad regex"),
        (("'pneumothorax{GAP}'", "'pneumothorax{NOPE}'"), "{NOPE}", "unknown fragment"),
        (("synonyms = ['effusion']", "synonyms = ['effusion', 'PTX']"), "'PTX'", "maps to two findings"),
        (('"PTX" = "pneumothorax"', '"PTX" = "pneumothorax_big"'), '"PTX"', "unknown finding id 'pneumothorax_big'"),
        (("router_fuzzy = ['pneumothorax']", "router_fuzzy = ['pneumothorax']\nsynonym = ['x']"), "synonym =",
         "unknown key"),
        (('display = "Pneumothorax"', 'display = "Pneumothorax"\nparent = "lung_thing"'), "parent",
         "parent 'lung_thing' is not a finding id"),
        (('display = "Pneumothorax"', 'display = "Pneumothorax"\nsnomed = { code = "abc", meaning = "x" }'),
         "snomed", "snomed must be"),
        (("labeler_keywords = ['pneumothora']", ""), "[finding.pneumothorax]", "need labeler_keywords"),
    ],
)
def test_malformed_lexicon_fails_naming_the_line(tmp_path: Path, edit: tuple[str, str], needle: str,
                                                  message: str) -> None:
    text = _MINIMAL.replace(*edit)
    assert text != _MINIMAL
    path = _write(tmp_path, text)
    with pytest.raises(LexiconError) as err:
        load_lexicon(path)
    msg = str(err.value)
    assert message in msg
    assert msg.startswith(f"{path}:{_line_of(text, needle)}:"), msg


def test_toml_syntax_error_and_parent_loop(tmp_path: Path) -> None:
    with pytest.raises(LexiconError, match=r"not valid TOML.*line 2"):
        load_lexicon(_write(tmp_path, "version = 1\n[finding.x\n"))
    loop = _MINIMAL.replace('display = "Pneumothorax"', 'display = "Pneumothorax"\nparent = "pleural_effusion"')
    loop = loop.replace('display = "Pleural effusion"', 'display = "Pleural effusion"\nparent = "pneumothorax"')
    with pytest.raises(LexiconError, match="loops back"):
        load_lexicon(_write(tmp_path, loop))


def test_snomed_column_is_optional_and_typed(tmp_path: Path) -> None:
    text = _MINIMAL.replace('display = "Pneumothorax"',
                            'display = "Pneumothorax"\nsnomed = { code = "36118008", meaning = "Pneumothorax" }')
    lex = load_lexicon(_write(tmp_path, text))
    assert lex.findings["pneumothorax"].snomed is not None
    assert lex.findings["pneumothorax"].snomed.code == "36118008"


def test_every_product_pattern_compiles_and_keywords_are_lower_case() -> None:
    for e in lexicon().findings.values():
        for p in (*e.labeler_mentions, *e.labeler_hedged, *e.router_phrases):
            re.compile(p)
        assert all(k == k.lower() for k in e.labeler_keywords), e.id


def test_regions_and_combined_labels_are_validated(tmp_path: Path) -> None:
    region = '\n[region.right_hemidiaphragm]\ndisplay = "Right hemidiaphragm"\nimagenome = "right hemidiaphragm"\n' \
             "synonyms = ['right hemidiaphragm', 'right diaphragm']\n"
    lex = load_lexicon(_write(tmp_path, _MINIMAL + region))
    assert lex.regions["right_hemidiaphragm"].imagenome == "right hemidiaphragm"
    cases = [
        (region.replace("right_hemidiaphragm]", "pneumothorax]"), "[region.pneumothorax]", "regions are locations"),
        (region.replace("'right diaphragm'", "'ptx'"), "'right hemidiaphragm', 'ptx'",
         "already a synonym of finding 'pneumothorax'"),
        ('\n[combined_label]\n"demo:Nope" = "x"\n', '"demo:Nope"', "names no label"),
        ('\n[label_set.two]\n"A/B" = ["pneumothorax", "pleural_effusion"]\n', '"A/B"', "explain it in [combined_label]"),
    ]
    for extra, needle, message in cases:
        text = _MINIMAL + extra
        with pytest.raises(LexiconError) as err:
            load_lexicon(_write(tmp_path, text))
        assert message in str(err.value)
        assert str(err.value).startswith(f"{tmp_path / 'lexicon.toml'}:{_line_of(text, needle)}:"), str(err.value)
    ok = _MINIMAL + '\n[label_set.two]\n"A/B" = ["pneumothorax", "pleural_effusion"]\n[combined_label]\n"two:A/B" = "why"\n'
    assert load_lexicon(_write(tmp_path, ok)).label_sets["two"]["A/B"] == ("pneumothorax", "pleural_effusion")
