"""Re-ID CMC/mAP: equal to torchreid's evaluator, hand-computed cases, edge cases."""
import numpy as np
import pytest
import torch

from bench.metrics import reid
from bench.metrics.reid import evaluate_rank, pairwise_distance, re_ranking


def layout(rng, n_ids, n_cams, q_per_id, g_per_id, distractors=0):
    q_pids = np.repeat(np.arange(1, n_ids + 1), q_per_id)
    g_pids = np.concatenate([np.repeat(np.arange(1, n_ids + 1), g_per_id), np.zeros(distractors, int)])
    return (q_pids, g_pids, rng.integers(0, n_cams, len(q_pids)), rng.integers(0, n_cams, len(g_pids)))


def torchreid_eval(d, qp, gp, qc, gc, max_rank=50):
    rank = pytest.importorskip("torchreid.reid.metrics.rank")
    cmc, mAP = rank.evaluate_rank(d, qp, gp, qc, gc, max_rank=max_rank, use_metric_cuhk03=False,
                                  use_cython=False)
    return cmc, mAP


@pytest.mark.parametrize("name, n_ids, n_cams, q_per, g_per, distract", [
    ("market-like", 60, 6, 3, 6, 40),
    ("msmt-like", 80, 15, 2, 5, 0),
    ("few-cams", 30, 2, 2, 3, 10),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_torchreid_on_random_matrices(name, n_ids, n_cams, q_per, g_per, distract, seed):
    rng = np.random.default_rng(seed)
    qp, gp, qc, gc = layout(rng, n_ids, n_cams, q_per, g_per, distract)
    d = rng.random((len(qp), len(gp)))
    ours = evaluate_rank(d, qp, gp, qc, gc, chunk_elems=len(gp) * 7)  # several chunks
    cmc, mAP = torchreid_eval(d, qp, gp, qc, gc)
    assert ours.mAP == pytest.approx(mAP, abs=1e-6)
    np.testing.assert_allclose(ours.cmc, cmc, atol=1e-6)


def test_structured_distances_equal_torchreid():
    """Informative distances (features), as a trained model gives: many early matches."""
    rng = np.random.default_rng(3)
    qp, gp, qc, gc = layout(rng, 50, 6, 2, 8, 30)
    centers = rng.normal(size=(51, 16))
    qf = centers[qp] + rng.normal(scale=0.8, size=(len(qp), 16))
    gf = centers[gp] + rng.normal(scale=0.8, size=(len(gp), 16))
    d = pairwise_distance(torch.tensor(qf), torch.tensor(gf)).double().numpy()
    ours = evaluate_rank(d, qp, gp, qc, gc)
    cmc, mAP = torchreid_eval(d, qp, gp, qc, gc)
    assert ours.mAP == pytest.approx(mAP, abs=1e-6) and ours.mAP > 0.3
    np.testing.assert_allclose(ours.cmc, cmc, atol=1e-6)


def test_hand_computed():
    # one query (pid 1, cam 0); gallery sorted by distance:
    # g0 pid1 cam0 (same camera: removed), g1 pid2, g2 pid1 cam1, g3 pid3, g4 pid1 cam2
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    r = evaluate_rank(d, [1], [1, 2, 1, 3, 1], [0], [0, 0, 1, 0, 2], max_rank=4)
    # valid ranking: pid2, pid1, pid3, pid1 -> matches at ranks 2 and 4
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1])
    assert r.num_valid_queries == 1


def test_junk_is_ignored_and_distractors_kept():
    d = np.array([[0.1, 0.2, 0.3]])
    # junk (-1) first: ignored; then a distractor (0), then the match
    r = evaluate_rank(d, [5], [-1, 0, 5], [0], [1, 1, 1], max_rank=3)
    assert r.mAP == pytest.approx(1 / 2)
    np.testing.assert_allclose(r.cmc, [0, 1, 1])
    r = evaluate_rank(d, [5], [-1, 0, 5], [0], [1, 1, 1], max_rank=3, remove_junk=False)
    assert r.mAP == pytest.approx(1 / 3)


def test_queries_without_match_are_skipped_and_all_missing_raises():
    d = np.array([[0.1, 0.2], [0.3, 0.1]])
    r = evaluate_rank(d, [1, 2], [1, 1], [0, 0], [1, 0], max_rank=2)
    assert r.num_valid_queries == 1 and r.mAP == 1.0
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(d, [3, 4], [1, 1], [0, 0], [1, 0])
    with pytest.raises(ValueError, match="must match"):
        evaluate_rank(d, [1], [1, 1], [0], [1, 0])


def test_ties_resolved_like_a_stable_sort():
    # match (index 2) and a negative (index 0) at the same distance: the negative comes first
    d = np.array([[0.5, 0.9, 0.5, 0.7]])
    r = evaluate_rank(d, [1], [2, 3, 1, 1], [0], [1, 1, 1, 2], max_rank=4)
    # stable order: idx0 (neg), idx2 (match), idx3 (match), idx1 (neg)
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1])
    # ties between two matches do not change AP
    d = np.array([[0.5, 0.5, 0.2]])
    r = evaluate_rank(d, [1], [1, 1, 2], [0], [1, 2, 1], max_rank=3)
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def stable_reference(d, qp, gp, qc, gc, max_rank=50, remove_junk=True):
    """The protocol with a stable sort of every row, one query at a time (NumPy sorts NaN
    last): the order evaluate_rank promises where distances tie."""
    aps, firsts = [], []
    for i in range(len(d)):
        order = np.argsort(d[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        if remove_junk:
            keep &= gp[order] != -1
        m = (gp[order] == qp[i])[keep]
        if m.any():
            at = np.flatnonzero(m)
            aps.append((np.arange(1, len(at) + 1) / (at + 1)).mean())
            firsts.append(at[0])
    firsts = np.array(firsts)
    cmc = np.array([(firsts <= k).mean() for k in range(min(max_rank, d.shape[1]))])
    return cmc, float(np.mean(aps)), np.array(aps)


@pytest.fixture
def counting_only(monkeypatch):
    """Fail if a block falls back to the sort: the histogram path must handle it."""
    def no_sort(*a, **k):
        raise AssertionError("the counting path fell back to sorting")
    monkeypatch.setattr(reid, "_sorted_block", no_sort)


def _tied(rng, shape, levels):
    return rng.integers(0, levels, shape) / levels


@pytest.mark.parametrize("levels", [200, 3000, 10 ** 6])
@pytest.mark.parametrize("rows_per_block", [1, 3, 1000])
def test_ties_on_the_counting_path_equal_a_stable_sort(counting_only, levels, rows_per_block):
    """Exact ties between matches, negatives and same-camera entries, within one histogram
    bin and across blocks: the counts equal a stable sort's ranks."""
    rng = np.random.default_rng(levels + rows_per_block)
    qp, gp, qc, gc = layout(rng, 40, 4, 3, 30, 800)
    d = _tied(rng, (len(qp), len(gp)), levels)
    r = evaluate_rank(d, qp, gp, qc, gc, chunk_elems=len(gp) * rows_per_block)
    cmc, mAP, ap = stable_reference(d, qp, gp, qc, gc)
    np.testing.assert_allclose(r.ap, ap, atol=1e-12)
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-12)
    assert r.mAP == pytest.approx(mAP, abs=1e-12)


@pytest.mark.parametrize("remove_junk", [True, False])
def test_junk_on_the_counting_path(counting_only, remove_junk):
    rng = np.random.default_rng(5)
    qp, gp, qc, gc = layout(rng, 30, 6, 2, 40, 800)
    gp = gp.copy()
    gp[rng.choice(len(gp), 300, replace=False)] = -1
    qp = qp.copy()
    if remove_junk:
        qp[:3] = -1  # junk queries: no true match once junk is removed
    d = _tied(rng, (len(qp), len(gp)), 1000)
    r = evaluate_rank(d, qp, gp, qc, gc, remove_junk=remove_junk, chunk_elems=len(gp) * 5)
    cmc, mAP, ap = stable_reference(d, qp, gp, qc, gc, remove_junk=remove_junk)
    np.testing.assert_allclose(r.ap, ap, atol=1e-12)
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-12)


@pytest.mark.parametrize("case", ["inf", "nan", "all-equal", "few-levels", "huge-range"])
def test_blocks_the_histogram_cannot_take_are_sorted(case):
    rng = np.random.default_rng(7)
    qp, gp, qc, gc = layout(rng, 20, 4, 2, 6, 30)
    d = rng.random((len(qp), len(gp)))
    if case == "inf":
        d[rng.random(d.shape) < 0.05] = np.inf
        d[0, :] = -np.inf
    elif case == "nan":
        d[rng.random(d.shape) < 0.05] = np.nan
    elif case == "all-equal":
        d[:] = 0.25
    elif case == "few-levels":
        d = _tied(rng, d.shape, 2)
    else:
        d[:, 0], d[:, 1] = -1e308, 1e308
    r = evaluate_rank(d, qp, gp, qc, gc, chunk_elems=len(gp) * 4)
    cmc, mAP, ap = stable_reference(d, qp, gp, qc, gc)
    np.testing.assert_allclose(r.ap, ap, atol=1e-12)
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-12)


def test_input_types_give_the_same_numbers():
    rng = np.random.default_rng(8)
    qp, gp, qc, gc = layout(rng, 20, 4, 2, 6, 30)
    d = _tied(rng, (len(qp), len(gp)), 200)
    want = evaluate_rank(d, qp, gp, qc, gc)
    for x in (d.astype(np.float32), d.astype(np.float16), torch.tensor(d),
              torch.tensor(d).to(torch.bfloat16), np.asfortranarray(d),
              np.rint(d * 200).astype(int)):
        got = evaluate_rank(x, torch.tensor(qp), list(gp), qc, gc)
        assert got.mAP == pytest.approx(want.mAP, abs=1e-12)
        np.testing.assert_allclose(got.cmc, want.cmc, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_equals_cpu():
    rng = np.random.default_rng(9)
    qp, gp, qc, gc = layout(rng, 50, 6, 3, 10, 100)
    d = _tied(rng, (len(qp), len(gp)), 500)
    cpu = evaluate_rank(d, qp, gp, qc, gc)
    gpu = evaluate_rank(torch.tensor(d, device="cuda"), qp, gp, qc, gc, chunk_elems=len(gp))
    np.testing.assert_allclose(gpu.ap, cpu.ap, atol=1e-12)
    np.testing.assert_allclose(gpu.cmc, cpu.cmc, atol=1e-12)


def test_cosine_and_euclidean_distances():
    q = torch.tensor([[3.0, 4.0]])
    g = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert pairwise_distance(q, g).tolist() == [[5.0, 4.0]]
    assert pairwise_distance(q, g[1:], "cosine").tolist() == [[pytest.approx(0.4)]]
    with pytest.raises(ValueError):
        pairwise_distance(q, g, "manhattan")


def test_re_ranking_helps_on_clustered_features():
    rng = np.random.default_rng(0)
    qp, gp, qc, gc = layout(rng, 20, 4, 2, 6)
    centers = rng.normal(size=(21, 8)) * 1.2
    qf = torch.tensor(centers[qp] + rng.normal(size=(len(qp), 8)), dtype=torch.float32)
    gf = torch.tensor(centers[gp] + rng.normal(size=(len(gp), 8)), dtype=torch.float32)
    base = evaluate_rank(pairwise_distance(qf, gf), qp, gp, qc, gc).mAP
    rr = re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3)
    assert rr.shape == (len(qp), len(gp))
    assert evaluate_rank(rr, qp, gp, qc, gc).mAP > base
