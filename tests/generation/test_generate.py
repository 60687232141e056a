"""Generation: the precision param is checked; CPU output is reproducible and bf16 stays close to fp32."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from augment.config import GenerateConfig, from_dict
from augment.errors import ConfigError


def test_generate_precision_param_is_checked():
    assert from_dict(GenerateConfig, {"precision": "bf16"}, "generate").precision == "bf16"
    with pytest.raises(ConfigError, match="generate.precision"):
        from_dict(GenerateConfig, {"precision": "fp8"}, "generate")


def test_cpu_generation_is_reproducible_and_bf16_stays_close(tmp_path: Path):
    from augment.generation.generate import generate_samples
    from augment.generation.shards import iter_shards
    from benchmarks.common import make_checkpoint

    ck = make_checkpoint(tmp_path / "g.safetensors", size=8, width=4, z_dim=8, num_classes=3, iterations=2)
    cfg = GenerateConfig(n_per_class=20, batch_size=16, shard_size=32, seed=5, device="cpu")
    outs = {}
    for name, c in {"a": cfg, "b": cfg, "bf16": replace(cfg, precision="bf16")}.items():
        summary = generate_samples(ck, tmp_path / name, c, progress=False)
        outs[name] = list(iter_shards(tmp_path / name))
    assert summary["precision"] == "bf16"
    # the scores depend on the batch composition: generate.json records what repeats them
    recorded = json.loads((tmp_path / "a" / "generate.json").read_text())
    assert (recorded["batch_size"], recorded["shard_size"], recorded["seed"]) == (16, 32, 5)
    assert outs["a"] and len(outs["a"]) == len(outs["b"]) == len(outs["bf16"])
    for x, y in zip(outs["a"], outs["b"]):  # same seed -> identical on CPU (fp32 default)
        assert all(np.array_equal(x[k], y[k]) for k in x)
    for x, y in zip(outs["a"], outs["bf16"]):  # bf16: same latents and labels, scores close
        assert np.array_equal(x["index"], y["index"]) and np.array_equal(x["labels"], y["labels"])
        assert np.abs(x["scores"] - y["scores"]).max() < 0.1 * (np.abs(x["scores"]).max() + 1.0)
    # reading only the metadata never loads images
    assert set(next(iter_shards(tmp_path / "a", keys=("scores", "index")))) == {"scores", "index"}


@pytest.mark.parametrize("c_out,size", [(1, 14), (3, 5)])
def test_subpixel_rewrite_computes_the_transposed_convolution(c_out: int, size: int):
    """The CPU inference copy's image layer (ConvTranspose2d 4x4, stride 2) rewritten as a 3x3
    convolution + pixel shuffle gives the same image, and only image layers are rewritten."""
    import torch

    from augment.generation.generate import SubPixelConv, subpixel_image_layers

    torch.manual_seed(0)
    ct = torch.nn.ConvTranspose2d(6, c_out, 4, 2, 1)
    x = torch.randn(5, 6, size, size)
    with torch.no_grad():
        assert torch.allclose(SubPixelConv(ct)(x), ct(x), atol=1e-5)
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(6, 16, 4, 2, 1), torch.nn.ReLU(), ct)
    assert subpixel_image_layers(net) == 1
    assert isinstance(net[0], torch.nn.ConvTranspose2d) and isinstance(net[2], SubPixelConv)


def test_loaded_cpu_sampler_draws_what_the_trained_one_draws(tmp_path: Path):
    """load_generator's CPU inference copy (class batch norms folded, sub-pixel image layer,
    channels-last) samples the same images as the generator it was saved from, for the same
    latents."""
    import torch

    from augment.generation.generate import FoldedClassBatchNorm, SubPixelConv, load_generator
    from augment.models.checkpoint import Checkpoint
    from augment.training.families import get_trainer_class
    from benchmarks.common import make_checkpoint

    ck_path = make_checkpoint(tmp_path / "g.safetensors", size=28, width=8, z_dim=8, num_classes=3, iterations=2)
    gen = load_generator(ck_path, "cpu", "fp32")
    assert any(isinstance(m, SubPixelConv) for m in gen.sampler.modules())
    assert any(isinstance(m, FoldedClassBatchNorm) for m in gen.sampler.modules())
    ck = Checkpoint(ck_path)
    trainer = get_trainer_class(ck.family)(ck.cfg, ck.image_shape, len(ck.class_names), torch.device("cpu"))
    ck.load_into(dict(trainer.modules()))
    ref = trainer.sampler().eval()
    y = torch.arange(9) % 3
    a = gen.sampler.sample(y, torch.Generator().manual_seed(3))
    b = ref.sample(y, torch.Generator().manual_seed(3))
    assert a.shape == b.shape == (9, 1, 28, 28) and torch.allclose(a, b, atol=1e-5)


def test_folded_class_batch_norm_is_the_eval_mode_class_batch_norm():
    import torch

    from augment.generation.generate import FoldedClassBatchNorm, fold_class_batchnorm
    from augment.models.gan import ClassBatchNorm

    torch.manual_seed(0)
    cbn = ClassBatchNorm(5, 3)
    cbn.bn.running_mean.normal_()
    cbn.bn.running_var.uniform_(0.2, 3.0)
    cbn.gain.weight.data.normal_()
    cbn.bias.weight.data.normal_()
    x, y = torch.randn(7, 5, 4, 4), torch.tensor([0, 1, 2, 2, 1, 0, 1])
    net = torch.nn.ModuleList([cbn]).eval()
    with torch.no_grad():
        ref = cbn(x, y)
        assert fold_class_batchnorm(net) == 1 and isinstance(net[0], FoldedClassBatchNorm)
        assert torch.allclose(net[0](x, y), ref, atol=1e-5)
    assert fold_class_batchnorm(torch.nn.ModuleList([ClassBatchNorm(5, 3)])) == 0  # training mode: left alone


def test_interpolated_codes_lie_between_two_training_codes_of_the_class():
    """generate.sampler = interpolate: every code is mu_i + lambda (mu_j - mu_i) for two different
    training images i, j of the sample's class (lambda in [0, 1]); a class with one image gets its
    code; the draws are seeded."""
    import torch

    from augment.models.vae import ClassPrior, InterpolatingSampler

    class Codes(torch.nn.Module):  # a "decoder" that returns the code it is given
        def forward(self, z, y):
            return z

    anchors = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [10.0, 10.0], [-5.0, 3.0]])
    labels = torch.tensor([0, 0, 0, 1, 2])  # class 1 has a single training image
    s = InterpolatingSampler(Codes(), ClassPrior(2, 3), anchors, labels[[0, 1, 2, 3, 4]])
    y = torch.tensor([0] * 400 + [1] * 5 + [2] * 5)
    z = s.sample(y, torch.Generator().manual_seed(0))
    assert torch.equal(z, s.sample(y, torch.Generator().manual_seed(0)))
    assert torch.allclose(z[400:405], anchors[3].expand(5, 2)) and torch.allclose(z[405:], anchors[4].expand(5, 2))
    c0 = z[:400]
    # the class-0 codes lie on the triangle's edges (x = 0, y = 0 or x + y = 4), strictly inside
    # the class's hull, never on a code of another class
    on_edge = (c0[:, 0].abs() < 1e-5) | (c0[:, 1].abs() < 1e-5) | ((c0.sum(1) - 4).abs() < 1e-4)
    assert bool(on_edge.all()) and bool((c0 >= -1e-6).all()) and bool((c0.sum(1) <= 4 + 1e-4).all())
    for a, b in ((0, 1), (0, 2), (1, 2)):  # every pair of different images is drawn
        d = anchors[b] - anchors[a]
        t = ((c0 - anchors[a]) @ d) / (d @ d)
        near = ((anchors[a] + t[:, None] * d - c0).norm(dim=1) < 1e-4) & (t > 0.05) & (t < 0.95)
        assert int(near.sum()) > 20


def test_residual_samples_are_edits_of_a_training_image_of_their_class():
    """generate.sampler = residual: a sample of class c is x_i + D(z) - D(z_i) for a training
    image x_i of c, so the decoder's own error cancels (scale 0 gives the images back exactly,
    although D(z_i) != x_i) and the edit is the decoder's change for the moved code; a class with
    no training image gets the prior's sample; the draws are seeded."""
    import torch

    from augment.models.vae import ClassPrior, ResidualSampler

    class Lin(torch.nn.Module):  # a "decoder" that reconstructs nothing exactly: 0.1 z + 0.3
        def forward(self, z, y):
            return 0.1 * z.view(-1, 1, 2, 2) + 0.3

    images = torch.tensor([-0.6, -0.2, 0.2, 0.6])[:, None, None, None].expand(4, 1, 2, 2).contiguous()
    labels = torch.tensor([1, 0, 1, 0])  # classes 0 and 1 have two images each, class 2 none
    codes = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0] * 300 + [1] * 300 + [2] * 300)
    copies = ResidualSampler(Lin(), ClassPrior(4, 3), codes, labels, images, scale=0.0).sample(
        y, torch.Generator().manual_seed(0))
    for c, own in ((0, {-0.2, 0.6}), (1, {-0.6, 0.2})):
        got = copies[y == c]
        assert torch.allclose(got, got[:, :, :1, :1].expand_as(got))  # whole images, unedited
        assert {round(v, 4) for v in got[:, 0, 0, 0].tolist()} == own  # both images of the class, no other
    edits = ResidualSampler(Lin(), ClassPrior(4, 3), codes, labels, images, scale=1.0)
    e = edits.sample(y, torch.Generator().manual_seed(1))
    assert torch.equal(e, edits.sample(y, torch.Generator().manual_seed(1)))
    for c, own in ((0, torch.tensor([-0.2, 0.6])), (1, torch.tensor([-0.6, 0.2]))):
        got = e[y == c].flatten(1)
        src = own[(got.mean(1, keepdim=True) - own).abs().argmin(1)]
        change = got - src[:, None]  # = 0.1 * L eps with L = I: the decoder's change, not its error
        assert abs(float(change.mean())) < 0.02 and 0.08 < float(change.std()) < 0.12
    prior = e[y == 2]  # no training image: decoded prior codes, 0.1 eps + 0.3
    assert abs(float(prior.mean()) - 0.3) < 0.02 and 0.08 < float(prior.std()) < 0.12


@pytest.mark.slow
def test_a_vae_checkpoint_carries_its_images_and_generates_residual_edits(workspace: Path):
    """train saves the training images themselves with a VAE checkpoint; generate.sampler =
    residual edits them reproducibly, records the scale, and a checkpoint whose images do not
    fit it is refused with the fix named."""
    import torch

    from augment.cli import main
    from augment.data.prepare import load_prepared
    from augment.errors import CheckpointError
    from augment.generation.generate import load_generator
    from augment.generation.shards import iter_shards
    from augment.models.checkpoint import Checkpoint, save_checkpoint
    from augment.training.families import get_trainer_class
    from tests.conftest import write_params

    write_params(workspace / "params.yaml", {"train": {"family": "vae"},
                                             "generate": {"sampler": "residual", "residual_scale": 0.5}})
    assert main(["prepare", "--quiet"]) == 0 and main(["train", "--quiet"]) == 0
    ck = Checkpoint("models/generator.safetensors")
    x, y = load_prepared("data/prepared").subset("train")
    extra = ck.extra_tensors()
    assert np.array_equal(extra["anchor_images"].numpy(), x) and np.array_equal(extra["anchor_labels"].numpy(), y)
    runs = []
    for _ in range(2):
        assert main(["generate", "--quiet"]) == 0
        runs.append([s["images"] for s in iter_shards("data/generated")])
    assert runs[0] and len(runs[0]) == len(runs[1])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    summary = json.loads(Path("data/generated/generate.json").read_text())
    assert summary["sampler"] == "residual" and summary["residual_scale"] == 0.5
    t = get_trainer_class("vae")(ck.cfg, ck.image_shape, len(ck.class_names), torch.device("cpu"))
    ck.load_into(t.modules())
    for name, images in {"none": None, "cropped": extra["anchor_images"][:, 1:],
                         "float": extra["anchor_images"].float()}.items():
        tensors = {k: v for k, v in extra.items() if k != "anchor_images" and not k.startswith("grid_")}
        if images is not None:
            tensors["anchor_images"] = images
        save_checkpoint(workspace / f"{name}.safetensors", t.modules(), ck.cfg, ck.image_shape, ck.class_names,
                        extra_tensors=tensors)
        fix = "carries no training images.*re-run the train stage" if images is None else \
            "training images are damaged.*re-run the train stage"
        with pytest.raises(CheckpointError, match=fix):
            load_generator(workspace / f"{name}.safetensors", "cpu", sampler="residual")


@pytest.mark.slow
def test_a_vae_checkpoint_carries_its_codes_and_generates_by_interpolation(workspace: Path):
    """train saves the training images' codes with a VAE checkpoint; generate.sampler =
    interpolate uses them (reproducibly). A GAN checkpoint, or a VAE checkpoint without codes,
    is refused with the fix named."""
    import torch

    from augment.cli import main
    from augment.errors import CheckpointError
    from augment.generation.generate import load_generator
    from augment.generation.shards import iter_shards
    from augment.models.checkpoint import Checkpoint, save_checkpoint
    from tests.conftest import write_params

    write_params(workspace / "params.yaml", {"train": {"family": "vae"}, "generate": {"sampler": "interpolate"}})
    assert main(["prepare", "--quiet"]) == 0 and main(["train", "--quiet"]) == 0
    ck = Checkpoint("models/generator.safetensors")
    codes = ck.extra_tensors()
    train_images = ck.extra["train_images"]
    # another thread count changes the float sums' last bits: the checkpoint says how many trained it
    assert ck.extra["torch_threads"] == torch.get_num_threads()
    # and which versions wrote it (a newer opencv wheel alone changed a generator's last digits)
    assert ck.meta["versions"]["torch"] == torch.__version__ and ck.meta["versions"]["opencv"] != "absent"
    assert codes["anchors"].shape == (train_images, ck.cfg.z_dim) and codes["anchor_labels"].shape == (train_images,)
    shards = []
    for _ in range(2):
        assert main(["generate", "--quiet"]) == 0
        shards.append([s["images"] for s in iter_shards("data/generated")])
    assert shards[0] and len(shards[0]) == len(shards[1])
    assert all(np.array_equal(a, b) for a, b in zip(*shards))
    # without its codes (a checkpoint written before they were saved): the same weights, re-saved
    from augment.training.families import get_trainer_class

    t = get_trainer_class("vae")(ck.cfg, ck.image_shape, len(ck.class_names), torch.device("cpu"))
    ck.load_into(t.modules())
    save_checkpoint(workspace / "old.safetensors", t.modules(), ck.cfg, ck.image_shape, ck.class_names)
    assert load_generator(workspace / "old.safetensors", "cpu").checkpoint.family == "vae"  # prior: fine
    with pytest.raises(CheckpointError, match="carries no training codes.*re-run the train stage"):
        load_generator(workspace / "old.safetensors", "cpu", sampler="interpolate")
    write_params(workspace / "params.yaml", {"generate": {"sampler": "interpolate"}})  # a GAN
    assert main(["train", "--quiet"]) == 0
    with pytest.raises(CheckpointError, match="needs a train.family vae checkpoint"):
        load_generator("models/generator.safetensors", "cpu", sampler="interpolate")


def test_damaged_training_codes_are_refused_with_the_fix_named(tmp_path: Path):
    """A VAE checkpoint whose saved codes do not fit it (wrong width, labels out of range, NaN)
    is refused by generate.sampler = interpolate before anything is generated."""
    import torch

    from augment.config import TrainConfig
    from augment.errors import CheckpointError
    from augment.generation.generate import load_generator
    from augment.models.checkpoint import save_checkpoint
    from augment.training.families import get_trainer_class

    cfg = TrainConfig(family="vae", arch="small", z_dim=4, g_channels=4, d_channels=4, iterations=1, device="cpu")
    t = get_trainer_class("vae")(cfg, (8, 8, 1), 2, torch.device("cpu"))
    good = {"anchors": torch.zeros(3, 4), "anchor_labels": torch.tensor([0, 1, 1])}
    bad = {"width": {**good, "anchors": torch.zeros(3, 5)},
           "labels": {**good, "anchor_labels": torch.tensor([0, 1, 2])},
           "nan": {**good, "anchors": torch.full((3, 4), float("nan"))}}
    save_checkpoint(tmp_path / "good.safetensors", t.modules(), cfg, (8, 8, 1), ["a", "b"], extra_tensors=good)
    assert load_generator(tmp_path / "good.safetensors", "cpu", sampler="interpolate").sampler.counts.tolist() == [1, 2]
    for name, tensors in bad.items():
        save_checkpoint(tmp_path / f"{name}.safetensors", t.modules(), cfg, (8, 8, 1), ["a", "b"], extra_tensors=tensors)
        with pytest.raises(CheckpointError, match="training codes are damaged.*re-run the train stage"):
            load_generator(tmp_path / f"{name}.safetensors", "cpu", sampler="interpolate")


def test_deform_samples_are_training_images_warped_by_fields_of_other_pairs_of_their_class():
    """generate.sampler = deform: registration finds the shift between two images of a class; a
    sample of class c is a training image of c warped by a field registered between two *other*
    images of c, moved by 0.3-1 x the scale; a class with fewer than two images gets the prior's
    sample; the draws are seeded."""
    import torch

    from augment.models.deform import DeformSampler, class_pairs, fit_fields, warp
    from augment.models.vae import ClassPrior, VAESampler

    def blob(cx):  # a bright square on black, its left edge at column cx (16 x 16)
        x = -torch.ones(1, 16, 16)
        x[:, 5:11, cx:cx + 6] = 1.0
        return x

    # registration: the field that warps a blob onto the same blob 2 pixels to its right
    v = fit_fields(torch.stack([blob(4), blob(6)]), torch.tensor([0, 0]), 1, grid=4, max_pairs=10, seed=0)[1]
    moved = warp(blob(4)[None], v[:1])
    assert float((moved - blob(6)).abs().mean()) < 0.5 * float((blob(4) - blob(6)).abs().mean())

    assert class_pairs(np.array([0, 0, 0, 1]), 3, max_pairs=10, seed=0).tolist() == \
        [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    assert len(class_pairs(np.array([0] * 6), 1, max_pairs=7, seed=0)) == 7  # 30 pairs, 7 drawn

    class Zero(torch.nn.Module):  # the prior's "decoder": all zeros, told apart from any warp
        def forward(self, z, y):
            return torch.zeros(len(z), 1, 16, 16)

    images = torch.stack([blob(2), blob(4), blob(6), blob(8)])
    labels = torch.tensor([0, 0, 0, 1])  # class 0: three images, class 1: one (no pair), class 2: none
    pairs = torch.from_numpy(class_pairs(labels.numpy(), 3, 10, 0))
    fields = torch.zeros(len(pairs), 2, 4, 4)
    fields[:, 0] = torch.arange(len(pairs), dtype=torch.float32)[:, None, None] * 0.01  # tells the pairs apart
    s = DeformSampler(VAESampler(Zero(), ClassPrior(4, 3)), images, labels, pairs, fields, 3, scale=1.0)
    y = torch.tensor([0] * 200 + [1] * 20 + [2] * 20)
    out = s.sample(y, torch.Generator().manual_seed(0))
    assert torch.equal(out, s.sample(y, torch.Generator().manual_seed(0)))
    assert torch.equal(out[200:], torch.zeros(40, 1, 16, 16))  # no pair in class 1, no image in class 2
    # with zero fields every class-0 sample is one of its own images, unmoved
    still = DeformSampler(VAESampler(Zero(), ClassPrior(4, 3)), images, labels, pairs, torch.zeros_like(fields), 3)
    got = still.sample(y[:200], torch.Generator().manual_seed(1))
    own = [((got - images[i]).abs() < 1e-5).flatten(1).all(1) for i in range(3)]
    assert bool(torch.stack(own).any(0).all()) and all(bool(o.any()) for o in own)
    assert not bool(((got - images[3]).abs() < 1e-5).flatten(1).all(1).any())  # never another class's image
    # deform_random: 0 draws nothing more (the samples above, bit for bit); 1 warps every sample by a
    # random field of its class's field size (zero fields: size 0, so its own image, unmoved)
    assert torch.equal(DeformSampler(VAESampler(Zero(), ClassPrior(4, 3)), images, labels, pairs, fields, 3,
                                     random=0.0).sample(y, torch.Generator().manual_seed(0)), out)
    assert s.field_rms[1] == 0 and torch.isclose(s.field_rms[0], fields.pow(2).mean().sqrt())
    rand = DeformSampler(VAESampler(Zero(), ClassPrior(4, 3)), images, labels, pairs, fields, 3, random=1.0)
    r = rand.sample(y, torch.Generator().manual_seed(0))
    assert torch.equal(r, rand.sample(y, torch.Generator().manual_seed(0))) and not torch.equal(r[:200], out[:200])
    assert torch.equal(r[200:], out[200:])  # classes without fields still fall back
    rstill = DeformSampler(VAESampler(Zero(), ClassPrior(4, 3)), images, labels, pairs, torch.zeros_like(fields), 3,
                           random=1.0).sample(y[:200], torch.Generator().manual_seed(1))
    assert bool(torch.stack([((rstill - images[i]).abs() < 1e-5).flatten(1).all(1) for i in range(3)]).any(0).all())
    # at 0.5 each sample is either the learnt-only sampler's or the all-random one's (the same draws
    # come first), about half of each
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    half = DeformSampler(VAESampler(Zero(), ClassPrior(4, 3)), images, labels, pairs, fields, 3, random=0.5)
    h, learnt, allr = half.sample(y[:200], g()), s.sample(y[:200], g()), rand.sample(y[:200], g())
    is_r = (h == allr).flatten(1).all(1)
    assert bool(((h == learnt).flatten(1).all(1) | is_r).all()) and 50 < int(is_r.sum()) < 150


@pytest.mark.slow
def test_deform_runs_on_a_gan_checkpoint_and_an_old_one_is_refused_with_the_fix(workspace: Path):
    """generate.sampler = deform (the default) needs only the training images and their labels,
    which a GAN checkpoint carries as a VAE's does: the stage warps them reproducibly (every sample
    of a class with fields is a warp, never a training image unmoved), and a checkpoint written
    without the images is refused with the fix named, before anything is generated."""
    import torch

    from augment.cli import main
    from augment.data.prepare import load_prepared
    from augment.errors import CheckpointError
    from augment.generation.generate import load_generator
    from augment.generation.shards import iter_shards
    from augment.models.checkpoint import Checkpoint, save_checkpoint
    from augment.models.deform import DeformSampler
    from augment.training.families import get_trainer_class
    from tests.conftest import write_params

    write_params(workspace / "params.yaml", {"train": {"family": "gan"}, "generate": {"sampler": "deform"}})
    assert main(["prepare", "--quiet"]) == 0 and main(["train", "--quiet"]) == 0
    ck = Checkpoint("models/generator.safetensors")
    x, y = load_prepared("data/prepared").subset("train")
    extra = ck.extra_tensors()
    assert ck.family == "gan"
    assert np.array_equal(extra["anchor_images"].numpy(), x) and np.array_equal(extra["anchor_labels"].numpy(), y)
    assert isinstance(load_generator("models/generator.safetensors", "cpu", sampler="deform").sampler, DeformSampler)
    runs = []
    for _ in range(2):
        assert main(["generate", "--quiet"]) == 0
        runs.append([(s["images"], s["labels"]) for s in iter_shards("data/generated")])
    assert runs[0] and all(np.array_equal(a[0], b[0]) for a, b in zip(*runs))
    images = np.concatenate([s[0] for s in runs[0]])
    labels = np.concatenate([s[1] for s in runs[0]])
    assert json.loads(Path("data/generated/generate.json").read_text())["sampler"] == "deform"
    # every class has >= 2 training images here, so every sample is a warp of one of its class's
    far = [np.abs(images[i].astype(int)[None] - x[y == labels[i]].astype(int)).reshape(int((y == labels[i]).sum()), -1)
           .mean(1) for i in range(len(images))]
    assert min(float(d.min()) for d in far) < 60  # close to a training image of its own class ...
    assert sum(float(d.min()) > 0 for d in far) > 0.9 * len(far)  # ... but not that image unmoved

    t = get_trainer_class("gan")(ck.cfg, ck.image_shape, len(ck.class_names), torch.device("cpu"))
    ck.load_into(t.modules())
    save_checkpoint(workspace / "old.safetensors", t.modules(), ck.cfg, ck.image_shape, ck.class_names)
    with pytest.raises(CheckpointError, match="carries no training images.*re-run the train stage"):
        load_generator(workspace / "old.safetensors", "cpu", sampler="deform")
    assert load_generator(workspace / "old.safetensors", "cpu", sampler="prior").checkpoint.family == "gan"
