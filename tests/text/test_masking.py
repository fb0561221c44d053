"""Outlet-identity masking on real articles from the shared AllSides data."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from allsides_batch.text.masking import PLACEHOLDER, mask_outlet_identity, outlet_aliases
from allsides_batch.text.prep import TEXT_PREP_FILE, TextPrep, normalise_whitespace, prepare_text

# Real articles chosen for the outlet traces they carry (ids of the shared articles.parquet).
EXAMPLES = {
    "washington_times": "07A0PJ3Srf9pAsyP",   # newsletter + copyright footer
    "reuters": "12blL68ql93XQi9Z",            # "WASHINGTON (Reuters) -" dateline
    "cnn": "0we1gRnJ1sVtcvhL",                # "Washington (CNN)" dateline
    "usa_today": "1VjT9lRf99ZpJubk",          # photo credit, "Read or Share this story: URL"
    "fox": "0I92p3uOk9cof7k0",                # "Fox News Channel's Ed Henry contributed to this report."
    "the_hill": "09VjuWV4gjfZq2fE",           # "Adam Schiff Adam Bennett SchiffGraham: … MORE"
}


@pytest.fixture(scope="module")
def table(articles_path):
    return pq.read_table(articles_path, columns=["id", "source", "title", "text"])


@pytest.fixture(scope="module")
def examples(table):
    rows = table.filter(pc.is_in(table["id"], value_set=__import__("pyarrow").array(list(EXAMPLES.values()))))
    by_id = {r["id"]: r for r in rows.to_pylist()}
    return {name: by_id[i] for name, i in EXAMPLES.items()}


def masked(row) -> tuple[str, str]:
    before = normalise_whitespace(row["text"])
    return before, mask_outlet_identity(before, row["source"])


def test_footer_boilerplate_removed_content_kept(examples):
    before, after = masked(examples["washington_times"])
    assert "Copyright ©" in before and "Sign up for Daily Newsletters" in before
    assert "Copyright" not in after and "Newsletter" not in after and "Washington Times" not in after
    # the last sentence of the story (which names another outlet) stays
    assert after.endswith("she wrote for The Hill.")
    assert len(after) > 0.9 * len(before) - 200


@pytest.mark.parametrize("name, dateline", [("reuters", "WASHINGTON (Reuters) - "), ("cnn", "Washington (CNN) ")])
def test_wire_datelines_removed(examples, name, dateline):
    before, after = masked(examples[name])
    assert before.startswith(dateline)
    assert after.startswith(before[len(dateline):len(dateline) + 60])
    assert "(Reuters)" not in after and "(CNN)" not in after


def test_urls_photo_credits_and_share_lines_removed(examples):
    before, after = masked(examples["usa_today"])
    assert "Read or Share this story" in before and "(Photo: Peter Foley, EPA)" in before
    assert "http" not in after and "usat.ly" not in after
    assert "Read or Share" not in after and "Photo:" not in after
    assert "Bernie Sanders speaks at the Apollo Theater in Harlem on April 9, 2016." in after


def test_contributor_line_and_own_name_removed(examples):
    before, after = masked(examples["fox"])
    assert "contributed to this report" in before
    assert "contributed to this report" not in after and "Fox" not in after
    assert "Spokesman Brian Fallon said" in after


def test_the_hill_name_expansion_collapsed(examples):
    before, after = masked(examples["the_hill"])
    assert "SchiffGraham" in before
    assert "Adam Schiff (D-Calif.)" in after and "Adam Bennett" not in after and " MORE" not in after


def test_own_name_and_aliases_masked_case_sensitively():
    assert "Fox News" in outlet_aliases("Fox Online News") and "CNN" in outlet_aliases("CNN (Web News)")
    assert "The New York Times" in outlet_aliases("New York Times - News")
    text = "Reason magazine argues the reason is cost. Fox News' poll and FOX NEWS both agree."
    assert mask_outlet_identity(text, "Reason").startswith(f"{PLACEHOLDER} magazine argues the reason is cost.")
    out = mask_outlet_identity(text, "Fox Online News")
    assert "Fox" not in out and "FOX" not in out and out.count(PLACEHOLDER) == 2


def test_ordinary_paragraphs_that_look_like_boilerplate_stay():
    text = ("By contrast, the Senate bill would cut taxes.\n\nTrump said on Twitter that he would veto it.\n\n"
            "Smith said the copyright law is outdated and should be replaced before the next session begins in "
            "January, according to three aides who spoke on condition of anonymity because they were not "
            "authorized to discuss it, and who added that a vote was unlikely before the summer recess, which "
            "starts in late July this year and ends after Labor Day.")
    assert mask_outlet_identity(text, "The Hill") == text


@pytest.mark.slow
def test_masking_holds_across_many_real_articles(table):
    """No Washington Times copyright footer and no CNN wire tag survives, on every article of a sample."""
    for source, trace in (("Washington Times", "Copyright ©"), ("CNN (Web News)", "(CNN)")):
        rows = table.filter(pc.equal(table["source"], source)).slice(0, 150).to_pylist()
        hit_before = sum(trace in r["text"] for r in rows)
        after = [mask_outlet_identity(normalise_whitespace(r["text"]), r["source"]) for r in rows]
        assert hit_before > 20
        assert not any(trace in a for a in after)
        kept = sum(map(len, after)) / sum(len(normalise_whitespace(r["text"])) for r in rows)
        assert kept > 0.9  # masking removes traces, not the story


def test_prepare_text_masks_title_and_body_only_when_asked(examples):
    row = examples["fox"]
    plain = prepare_text(row["title"], row["text"], TextPrep())
    assert plain == prepare_text(row["title"], row["text"], TextPrep(), source=row["source"])
    assert "contributed to this report" in plain
    masked_text = prepare_text(row["title"], row["text"], TextPrep(mask_outlet=True, mask_version=1),
                               source=row["source"])
    assert "contributed to this report" not in masked_text and "Fox" not in masked_text
    assert masked_text.startswith(normalise_whitespace(row["title"]))


def test_old_model_dirs_load_without_masking(tmp_path):
    (tmp_path / TEXT_PREP_FILE).write_text(json.dumps({"version": 1, "prepend_title": True, "separator": "\n\n"}))
    prep = TextPrep.load(str(tmp_path))
    assert prep.mask_outlet is False
    TextPrep(mask_outlet=True, mask_version=1).save(str(tmp_path))
    assert TextPrep.load(str(tmp_path)).mask_outlet is True
