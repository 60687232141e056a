"""crossfit.model / evaluate.model: the share is chosen for, and the result measured on, the
classifier the user names (a built-in family or their own ``package.module:function``)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import torch
import pytest

from augment.config import (
    ClassicalConfig,
    CrossfitConfig,
    EvaluateConfig,
    FilterConfig,
    GenerateConfig,
    TrainConfig,
    load_params,
)
from augment.downstream.models import LeNet
from augment.errors import ConfigError

# A user's model module: a factory that counts its calls, so a test can tell which network trained.
USER_MODULE = textwrap.dedent('''
    import torch.nn as nn

    CALLS = []

    class Tiny(nn.Module):
        def __init__(self, c, k, s):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, k))

        def forward(self, x):
            return self.net(x)

    def make(in_channels, num_classes, size):
        CALLS.append((in_channels, num_classes, size))
        return Tiny(in_channels, num_classes, size)

    def wrong_shape(in_channels, num_classes, size):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, num_classes + 1))

    def not_a_module(in_channels, num_classes, size):
        return "a string"

    NOT_CALLABLE = 3

    class FailsInTraining(Tiny):
        def forward(self, x):
            if self.training:
                raise RuntimeError("boom in training")
            return super().forward(x)

    def fails_in_training(in_channels, num_classes, size):
        return FailsInTraining(in_channels, num_classes, size)
''')


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch):
    """``usermodels_<test>`` importable from a temp directory; returns the imported module."""
    import importlib

    name = f"usermodels_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def _structured(per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    x = rng.integers(0, 40, size=(len(y), 8, 8, 1)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c:2 * c + 2, :, 0] = 230
    return x, y


def test_bad_model_names_are_rejected_at_load_naming_the_parameter(tmp_path: Path, user_models):
    """A typo in the name, a module that is not installed, an attribute that is not there or not
    callable: each fails when params.yaml is read (before the generator trains), naming the key."""
    from tests.conftest import write_params

    mod = user_models.__name__
    cases = {  # value -> the message (a regular expression)
        ("crossfit", "resnet"): r"crossfit.model = 'resnet': expected smallcnn, lenet, mlp or 'package.module:function'",
        ("evaluate", "no_such_pkg.models:make"): r"evaluate.model = 'no_such_pkg.models:make': cannot import module",
        ("evaluate", f"{mod}:nope"): rf"evaluate.model = '{mod}:nope': module '{mod}' has no attribute 'nope'",
        ("crossfit", f"{mod}:NOT_CALLABLE"): r"crossfit.model = .*'NOT_CALLABLE' is not callable",
        ("merge", f"{mod}:nope"): rf"merge.tune_model = '{mod}:nope': module '{mod}' has no attribute 'nope'",
        ("merge", "vgg"): r"merge.tune_model = 'vgg': expected smallcnn, lenet, mlp",
    }
    for (group, value), message in cases.items():
        key = "tune_model" if group == "merge" else "model"
        path = write_params(tmp_path / "params.yaml", {group: {key: value}})
        with pytest.raises(ConfigError, match=message):
            load_params(path)
    ok = load_params(write_params(tmp_path / "params.yaml", {"crossfit": {"model": f"{mod}:make"},
                                                             "evaluate": {"model": "lenet"}}))
    assert ok.crossfit.model == f"{mod}:make" and ok.evaluate.model == "lenet"
    assert load_params(write_params(tmp_path / "params.yaml")).evaluate.model == "smallcnn"  # the default


def test_a_model_that_does_not_fit_the_data_fails_before_training(user_models):
    from augment.downstream.models import check_model_builds

    mod = user_models.__name__
    with pytest.raises(ConfigError, match=r"evaluate.model = .*wrong_shape.*expected logits of shape \(2, 3\)"):
        check_model_builds(f"{mod}:wrong_shape", "evaluate.model", 1, 3, 8)
    with pytest.raises(ConfigError, match="returned str, not a torch.nn.Module"):
        check_model_builds(f"{mod}:not_a_module", "crossfit.model", 1, 3, 8)
    with pytest.raises(ConfigError, match=r"crossfit.model = 'lenet': the model fails on a \(2, 1, 3, 3\) batch"):
        check_model_builds("lenet", "crossfit.model", 1, 3, 3)  # LeNet needs at least 4x4 images
    check_model_builds("mlp", "evaluate.model", 3, 2, 25)  # fits: no error


def test_evaluate_trains_the_named_classifier(user_models):
    """Every variant x seed model of the evaluate stage is the user's network, and the report says
    which classifier it measured."""
    from augment.data.prepare import SPLIT_CODE, PreparedDataset
    from augment.evaluation.evaluate import evaluate_variants, train_variant

    x, y = _structured(8)
    split = np.where(np.arange(len(y)) % 4 == 0, SPLIT_CODE["test"], SPLIT_CODE["train"]).astype(np.int8)
    files = [f"f{i}.png" for i in range(len(y))]
    ds = PreparedDataset(x, y.astype(np.int64), split, ["a", "b", "c"], files, files)
    cfg = EvaluateConfig(seeds=[0, 1], steps=5, batch_size=8, device="cpu", workers=1,
                         model=f"{user_models.__name__}:make")
    user_models.CALLS.clear()
    out = evaluate_variants(ds, x[:3], y[:3], cfg, progress=False, classical=ClassicalConfig())
    assert out["model"] == cfg.model
    # one build check + 4 variants x 2 seeds, every one at the data's shape
    assert user_models.CALLS == [(1, 3, 8)] * 9
    assert isinstance(train_variant("real", x, y, x[:0], y[:0], 3, dataclasses.replace(cfg, model="lenet"), 0), LeNet)


def test_crossfit_chooses_the_share_with_the_named_classifier(monkeypatch, user_models):
    """The out-of-fold models that decide the share are the user's network (one per fold x
    candidate x seed), not the pipeline's SmallCNN."""
    from augment.selection import crossfit

    x, y = _structured(6)
    monkeypatch.setattr(crossfit, "fold_candidates", lambda fx, fy, *a: (fx, fy, np.ones(len(fx))))
    cfg = CrossfitConfig(folds=2, shares=[0.0, 0.5], seeds=[0, 1], steps=5, device="cpu", workers=1,
                         model=f"{user_models.__name__}:make")
    user_models.CALLS.clear()
    out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                   FilterConfig(), ClassicalConfig())
    assert len(out["table"]) == 2
    assert user_models.CALLS == [(1, 3, 8)] * (1 + 2 * 2 * 2)  # build check + folds x candidates x seeds


def test_the_val_tuner_trains_the_named_classifier(user_models):
    """merge.quota tuned: every grid point trains merge.tune_model (here the user's), not the
    SmallCNN, and a model that does not fit the data fails before any training."""
    from augment.config import MergeConfig
    from augment.selection.tuning import tune_selection

    mod = user_models.__name__
    x, y = _structured(6)
    syn_x, syn_y = _structured(4, seed=1)
    cfg = MergeConfig(quota="tuned", tune_fractions=[1.0], tune_shares=[0.0, 0.5], tune_steps=5, tune_seeds=[0, 1],
                      tune_model=f"{mod}:make", device="cpu")
    user_models.CALLS.clear()
    choice, curve = tune_selection(x, y, x[::3], y[::3], syn_x, syn_y, np.ones(len(syn_y)), 3, cfg)
    # one build to check it fits the data, then one model per grid point and seed
    assert user_models.CALLS == [(1, 3, 8)] * (1 + 2 * 2)
    assert choice["model"] == f"{mod}:make" and len(curve) == 2
    with pytest.raises(ConfigError, match="merge.tune_model = .*wrong_shape"):
        tune_selection(x, y, x[::3], y[::3], syn_x, syn_y, np.ones(len(syn_y)), 3,
                       dataclasses.replace(cfg, tune_model=f"{mod}:wrong_shape"))


@pytest.mark.parametrize("name", ["mlp", "lenet", "smallcnn"])
def test_the_built_in_classifiers_train_on_images_that_are_not_square(name):
    """Mixed sizes are stretched to the most common one, which need not be square (12x8 here):
    every built-in family builds, trains and predicts on it; on square images the extra pooling
    of mlp/lenet is the identity (same parameters as before)."""
    from augment.downstream.classifier import ClassifierSpec, predict_proba, train_downstream
    from augment.downstream.models import check_model_builds, resolve_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 12, 8, 1), dtype=np.uint8)
    y = np.arange(12) % 3
    check_model_builds(name, "evaluate.model", 1, 3, 8, 12, 8)
    model = train_downstream(x, y, 3, ClassifierSpec(steps=3, batch_size=4), 0, torch.device("cpu"),
                             make_model=resolve_model(name))
    assert predict_proba(model, x).shape == (12, 3)
    if name != "smallcnn":  # on square images the adaptive pooling is the identity
        square = resolve_model(name)(1, 3, 8).eval()
        pool = next(m for m in square.net if isinstance(m, torch.nn.AdaptiveAvgPool2d))
        seen = []
        pool.register_forward_hook(lambda mod, inp, out: seen.append(torch.equal(inp[0], out)))
        with torch.no_grad():
            assert square(torch.randn(2, 1, 8, 8)).shape == (2, 3)
        assert seen == [True]


def test_a_user_model_checked_on_the_real_image_shape_and_failing_in_training_names_the_param(user_models):
    """A factory built for square images is refused before training when the images are 12x8;
    one that raises only while training is reported as a ConfigError naming the parameter (a
    one-line error at the CLI), not a traceback from inside the pipeline."""
    from augment.downstream.models import check_model_builds
    from augment.evaluation.evaluate import train_variant

    mod = user_models.__name__
    with pytest.raises(ConfigError, match=r"the model fails on a \(2, 1, 12, 8\) batch"):
        check_model_builds(f"{mod}:make", "crossfit.model", 1, 3, 8, 12, 8)
    x, y = _structured(4)
    cfg = EvaluateConfig(steps=2, batch_size=4, device="cpu", workers=1, model=f"{mod}:fails_in_training")
    with pytest.raises(ConfigError, match=r"evaluate.model = .*fails_in_training.*training or scoring your model "
                                          r"failed: RuntimeError: boom in training"):
        train_variant("real", x, y, x[:0], y[:0], 3, cfg, 0)


def test_only_errors_raised_in_the_users_code_are_reported_as_their_models(user_models):
    """The pipeline's own errors inside the same block (a bug, out of memory, a DataError) keep
    their type and traceback: calling them the user's model's fault would send them hunting."""
    from augment.downstream.models import user_model_errors
    from augment.errors import DataError

    spec = f"{user_models.__name__}:fails_in_training"
    model = user_models.fails_in_training(1, 3, 4).train()
    with pytest.raises(ConfigError, match=r"evaluate.model = .*failed: RuntimeError: boom in training"):
        with user_model_errors(spec, "evaluate.model"):
            model(torch.zeros(2, 1, 4, 4))
    for err in (RuntimeError("a bug in the pipeline"), MemoryError(), DataError("images.npz is damaged")):
        with pytest.raises(type(err)) as info:
            with user_model_errors(spec, "evaluate.model"):
                raise err
        assert info.value is err
    # out of memory inside the user's forward: the machine's limit, not their model's fault
    oom = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    model.net = torch.nn.Sequential(_Raise(oom))
    model.eval()  # past its own training-time error: the user's forward calls the layer that runs out
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        with user_model_errors(spec, "evaluate.model"):
            model(torch.zeros(2, 1, 4, 4))


class _Raise(torch.nn.Module):
    def __init__(self, exc: BaseException):
        super().__init__()
        self.exc = exc

    def forward(self, x):
        raise self.exc
