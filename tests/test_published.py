"""The published numbers: every row of the SOLIDER tables, with the right value and direction."""
import csv
import re

import pytest

from bench import results
from bench.data import DATASETS
from conftest import SHARED

SOLIDER_TASKS = {"reid", "attribute", "search", "detection", "parsing", "pose"}


@pytest.fixture(scope="module")
def pub():
    return results.load_published()


def solider(pub):
    return pub[pub["source"].str.startswith("SOLIDER")]


def test_schema_and_vocabulary(pub):
    assert list(pub.columns) == results.PUBLISHED_COLUMNS
    s = solider(pub)
    assert len(s) == 190
    assert s.groupby("table").size().to_dict() == {"ablation": 64, "sota": 126}
    assert set(s["task"]) == SOLIDER_TASKS
    assert set(pub["dataset"]) <= set(DATASETS.names())
    assert set(pub["data_kind"]) == {"real"}
    # the seed's labels rendered properly: "hAP" is mAP, "R^-2" is MR^-2
    assert set(s["metric"]) == {"mAP", "Rank-1", "mA", "top-1", "MR^-2 Reasonable",
                                "MR^-2 Heavy", "mIoU", "AP", "AR"}
    assert not pub.duplicated(["source", "table", "task", "dataset", "metric", "method",
                               "arch"]).any()


def test_directions(pub):
    lower = pub[~pub["higher_is_better"]]
    assert set(lower["metric"]) == {"MR^-2 Reasonable", "MR^-2 Heavy"}
    assert (pub[pub["task"] != "detection"]["higher_is_better"]).all()


def test_ablation_columns_map_to_pretrain_methods(pub):
    a = solider(pub)
    a = a[a["table"] == "ablation"]
    assert set(zip(a["method"], a["pretrain_method"])) == {
        ("Sup", "sup"), ("DINO", "dino"), ("DINO+Clustering", "dinoclust"),
        ("DINO+Clustering+Controller", "solider")}
    assert set(a["arch"]) == {"swin_t"}
    ours = pub[(pub["method"] == "SOLIDER")]
    assert set(ours["arch"]) == {"swin_t", "swin_s", "swin_b"}


@pytest.mark.parametrize("table, dataset, metric, method, arch, value", [
    ("ablation", "pa100k", "mA", "DINO+Clustering+Controller", "swin_t", 84.15),
    ("ablation", "citypersons", "MR^-2 Heavy", "Sup", "swin_t", 43.8),
    ("ablation", "lip", "mIoU", "DINO", "swin_t", 54.45),
    ("sota", "msmt17", "mAP", "SOLIDER", "swin_b", 77.1),
    ("sota", "prw", "top-1", "GLCNet", "", 87.8),
    ("sota", "coco_keypoints", "AR", "SOLIDER", "swin_s", 81.3),
    ("sota", "citypersons", "MR^-2 Reasonable", "NMS-Loss", "", 10.8),
])
def test_spot_values(pub, table, dataset, metric, method, arch, value):
    hit = pub[(pub["table"] == table) & (pub["dataset"] == dataset) & (pub["metric"] == metric)
              & (pub["method"] == method) & (pub["arch"] == arch)]
    assert hit["value"].tolist() == [value]


def test_missing_cell_stays_missing(pub):
    # NMS-Loss reports no heavy-occlusion number ("10.8/-")
    nms = pub[pub["method"] == "NMS-Loss"]
    assert nms["metric"].tolist() == ["MR^-2 Reasonable"]


@pytest.mark.skipif(not (SHARED / "published" / "solider_tables.csv").is_file(),
                    reason="../shared/published (the checked transcription) is not beside this clone")
def test_every_row_of_the_checked_transcription(pub):
    names = {d.obj.display: d.name for d in DATASETS}
    src = list(csv.DictReader(open(SHARED / "published" / "solider_tables.csv")))
    s = solider(pub)
    assert len(src) == len(s)
    arch = {"Swin-T": "swin_t", "Swin-S": "swin_s", "Swin-B": "swin_b", "": ""}
    for r in src:
        hit = s[(s["table"] == r["table"]) & (s["task"] == r["task"])
                & (s["dataset"] == names[r["dataset"]])
                & (s["metric"] == r["metric"].replace("MR-2", "MR^-2"))
                & (s["method"] == r["method"]) & (s["arch"] == arch[r["backbone"]])]
        assert len(hit) == 1, r
        assert hit["value"].iloc[0] == float(r["value"]), r
        assert bool(hit["higher_is_better"].iloc[0]) == (r["lower_is_better"] == "0"), r


SEED_LABELS = {"Market1501": "market1501", "MSMT17": "msmt17", "PETAzs": "peta_zs",
               "PETA _{zs}": "peta_zs", "RAP _{zs}": "rap_zs", "PA100k": "pa100k",
               "CUHK-SYSU": "cuhk_sysu", "PRW": "prw", "CityPerson": "citypersons",
               "LIP": "lip", "COCO": "coco_keypoints"}


@pytest.mark.skipif(not list((SHARED / "seeds").glob("000_*.txt")),
                    reason="../shared/seeds (the SOLIDER poster text) is not beside this clone")
def test_every_number_of_the_seed_tables(pub):
    """Independent of the transcription: read the numbers straight off the poster text.

    Each dataset has one ablation line, then one SOTA line, whose cells are the values in
    the order our rows list them (method by method, metric by metric).
    """
    text = next((SHARED / "seeds").glob("000_*.txt")).read_text()
    seen = {}
    label_re = "|".join(re.escape(k) for k in sorted(SEED_LABELS, key=len, reverse=True))
    for line in text.splitlines():
        m = re.search(rf"(?:^|\t)({label_re})\t(.*)$", line)
        if not m or not re.fullmatch(r"[\d./\s-]+", m.group(2)):
            continue
        numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", m.group(2))]
        ds = SEED_LABELS[m.group(1)]
        table = "ablation" if ds not in seen else "sota"
        seen.setdefault(ds, []).append(table)
        s = solider(pub)
        ours = s[(s["table"] == table) & (s["dataset"] == ds)]["value"].tolist()
        assert ours == numbers, (table, ds)
    assert {ds: t for ds, t in seen.items()} == {ds: ["ablation", "sota"] for ds in seen}
    assert len(seen) == 10


def test_valpat_rows_are_marked_inferred(pub):
    v = pub[pub["pretrain_method"] == "valpat"]
    assert len(v) == 4 and set(v["task"]) == {"reid_unsup"}
    assert v["note"].str.contains("inferred").all()
    assert dict(zip(zip(v["dataset"], v["metric"]), v["value"])) == {
        ("market1501", "mAP"): 74.9, ("market1501", "Rank-1"): 86.1,
        ("msmt17", "mAP"): 38.9, ("msmt17", "Rank-1"): 67.5}


def test_malformed_published_file_names_the_file(tmp_path):
    (tmp_path / "x.csv").write_text("task,value\nreid,1\n")
    with pytest.raises(results.BenchError, match=r"x.csv: missing columns"):
        results.load_published(tmp_path)
    with pytest.raises(results.BenchError, match="no published numbers"):
        results.load_published(tmp_path / "empty")
