"""edge_ladder.model: masking, the inference/decoder separation, presence flags, checkpoints."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_ladder.errors import EdgeLadderError  # noqa: E402
from edge_ladder.features import batch_inputs  # noqa: E402
from edge_ladder.model import LadderNet, ModelConfig, load_checkpoint, model_config  # noqa: E402

F = torch.nn.functional


def random_clip(rng, t_audio, t_video, n_mels=80, size=48, missing=()):
    valid = np.ones(t_video, bool)
    valid[list(missing)] = False
    return (rng.normal(-5, 2, (t_audio, n_mels)).astype(np.float32),
            rng.normal(0, 1, (t_video, size, size)).astype(np.float32), valid)


def tensors(batch):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


@pytest.fixture(scope="module")
def net():
    """A tiny model with non-trivial running statistics, absent vectors, gamma/beta and
    combinators (at the ladder's init a1 = a4 = a6 = a9 = 0, so V gets no gradient until the
    first step moves them)."""
    torch.manual_seed(0)
    model = LadderNet(model_config("tiny"))
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "combinator" in name:
                p.add_(0.3 * torch.randn_like(p))
        model.train()
        for _ in range(3):
            clips = [random_clip(rng, int(rng.integers(60, 140)), int(rng.integers(6, 14))) for _ in range(8)]
            batch = tensors(batch_inputs(*zip(*clips)))
            model.training_losses(**batch, labels=torch.from_numpy(rng.integers(0, 6, 8)))
    model.eval()
    return model


def test_padding_does_not_change_the_output(net):
    rng = np.random.default_rng(2)
    clip = random_clip(rng, 97, 9, missing=(3,))
    alone = net(**tensors(batch_inputs(*zip(clip))))
    longer = random_clip(rng, 151, 15)
    padded = batch_inputs(*zip(clip, longer))
    padded["audio"][0, 97:] = rng.normal(0, 5, (151 - 97, 80))        # garbage in the padding
    padded["face"][0, 9:] = rng.normal(0, 5, (15 - 9, 1, 48, 48))
    padded["face"][0, 3] = rng.normal(0, 5, (1, 48, 48))                # and in the masked frame
    together = net(**tensors(padded))
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_masked_mean_survives_empty_masks(net):
    rng = np.random.default_rng(3)
    batch = batch_inputs(*zip(random_clip(rng, 33, 3, missing=(0, 1, 2)), random_clip(rng, 41, 4)))
    batch["audio_mask"][0] = 0.0
    out = net(**tensors(batch))
    assert torch.isfinite(out).all()


def test_clean_path_is_deterministic_and_matches_inference_module(net):
    rng = np.random.default_rng(4)
    batch = tensors(batch_inputs(*zip(*[random_clip(rng, 97 + 13 * i, 9 + i) for i in range(3)])))
    first = net(**batch)
    module = net.inference_module()
    net.train()  # the inference module uses running statistics whatever the mode
    try:
        torch.testing.assert_close(module(**batch), first, atol=0, rtol=0)
        torch.testing.assert_close(module(**batch), first, atol=0, rtol=0)
    finally:
        net.eval()
    # batch composition does not matter (running statistics, not batch statistics)
    single = net(**{k: v[1:2] for k, v in batch.items()})
    torch.testing.assert_close(single[0], first[1], atol=1e-5, rtol=1e-5)


def test_inference_ignores_decoders_and_decoders_get_gradients(net):
    rng = np.random.default_rng(5)
    clips = [random_clip(rng, int(rng.integers(80, 120)), int(rng.integers(8, 12))) for _ in range(6)]
    batch = tensors(batch_inputs(*zip(*clips)))
    labels = torch.from_numpy(rng.integers(0, 6, 6))
    module = net.inference_module()
    names = set(module.state_dict())
    assert names and not any("decoder" in n or "combinator" in n or "top_down" in n for n in names)
    before = module(**batch)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        net.train()
        net.zero_grad()
        out = net.training_losses(**batch, labels=labels, ladder="cross")
        out["loss"].backward()
        decoder_params = [(n, p) for n, p in net.named_parameters()
                          if "decoder" in n or "combinator" in n or "top_down" in n]
        assert decoder_params
        for name, param in decoder_params:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        net.eval()
        reference = module(**batch)  # the clean pass above moved the running statistics
        assert (reference - before).abs().max() > 0
        with torch.no_grad():
            for _, param in decoder_params:
                param.add_(torch.randn_like(param))
        torch.testing.assert_close(module(**batch), reference, atol=0, rtol=0)
        # the ablations: "within" leaves the cross heads without gradient, "none" every decoder
        for mode, idle in (("within", ".cross."), ("none", "")):
            net.train()
            net.zero_grad()
            out = net.training_losses(**batch, labels=labels, ladder=mode)
            out["loss"].backward()
            for name, param in decoder_params:
                if idle in name:
                    assert param.grad is None or param.grad.abs().sum() == 0, (mode, name)
            assert (out["denoise"] == 0) == (mode == "none")
    finally:
        net.load_state_dict(state)
        net.eval()


def test_presence_flags_switch_a_modality_off(net):
    rng = np.random.default_rng(6)
    clips = [random_clip(rng, 97, 9), random_clip(rng, 123, 12)]
    batch = batch_inputs(*zip(*clips))
    other = batch_inputs(*zip(*[random_clip(rng, 97, 9), random_clip(rng, 123, 12)]))
    for index, keys in ((1, ("face", "face_mask")), (0, ("audio", "audio_mask"))):
        absent = dict(batch, presence=batch["presence"].copy())
        absent["presence"][:, index] = 0.0
        swapped = dict(absent, **{k: other[k] for k in keys})
        a, b, full = net(**tensors(absent)), net(**tensors(swapped)), net(**tensors(batch))
        torch.testing.assert_close(a, b, atol=0, rtol=0)         # the absent modality is ignored
        assert (a - full).abs().max() > 1e-4                    # and the flag changes the output
        # a present modality does matter
        assert (net(**tensors(dict(batch, **{k: other[k] for k in keys}))) - full).abs().max() > 1e-4


def test_precomputed_embeddings_option():
    torch.manual_seed(0)
    config = ModelConfig(audio_input="embedding", audio_dim=64, face_input="embedding", face_dim=32,
                         audio_channels=16, embed_dim=16, encoder_dims=(16,), joint_dim=16)
    model = LadderNet(config)
    audio, face = torch.randn(3, 97, 64), torch.randn(3, 11, 32)
    masks = torch.ones(3, 97), torch.ones(3, 11)
    presence = torch.ones(3, 2)
    model.train()
    out = model.training_losses(audio, masks[0], face, masks[1], presence, labels=torch.tensor([0, 3, 5]))
    out["loss"].backward()
    model.eval()
    logits = model(audio, masks[0], face, masks[1], presence)
    assert logits.shape == (3, 6)
    # padding invariance holds for embeddings too
    masks[0][0, 50:] = 0
    ref = model(audio[:1, :50], masks[0][:1, :50], face[:1], masks[1][:1], presence[:1])
    torch.testing.assert_close(model(audio, masks[0], face, masks[1], presence)[:1], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(EdgeLadderError, match="face_dim"):
        ModelConfig(face_input="embedding")


def test_bad_config_and_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(EdgeLadderError, match="model size"):
        model_config("huge")
    with pytest.raises(EdgeLadderError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(EdgeLadderError, match="not an edge-ladder checkpoint: torch.load failed") as error:
        load_checkpoint(junk)
    # torch's unpickling paragraph (which advises the unsafe weights_only=False) is not passed on
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)
    assert "Unsupported operand" in str(error.value)  # the unpickler's own reason is
    # exported models: say which command takes them, before trying to unpickle
    for suffix in (".onnx", ".engine", ".plan"):
        exported = tmp_path / f"model{suffix}"
        exported.write_bytes(bytes(np.random.default_rng(9).integers(0, 256, 257, dtype=np.uint8)))
        with pytest.raises(EdgeLadderError, match="RUN_DIR/checkpoint.pt") as error:
            load_checkpoint(exported)
        assert "edge-ladder infer" in str(error.value) and "edge-ladder bench" in str(error.value)
        assert "torch.load" not in str(error.value)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(EdgeLadderError, match="format"):
        load_checkpoint(tmp_path / "other.pt")


def test_denoising_cost_and_batch_norm_use_only_present_samples():
    from edge_ladder.model import bn_present, denoising_cost
    rng = np.random.default_rng(7)
    z_pre = torch.from_numpy(rng.normal(2, 3, (9, 5)).astype(np.float32))
    z_hat = torch.from_numpy(rng.normal(0, 1, (9, 5)).astype(np.float32))
    present = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 1], dtype=torch.float32)
    keep = present.bool()
    z_pre[~keep] = 4.2  # absent samples: a constant (the learned "absent" vector)
    # = the cost on the sub-batch of present samples, which with all present is the reference
    sub, eps = z_pre[keep], 1e-5
    mean, var = sub.mean(0), sub.var(0, unbiased=False)
    for input_layer in (False, True):
        hat_bn = z_hat[keep] if input_layer else (z_hat[keep] - mean) / torch.sqrt(var + 1e-10)
        expected = ((F.batch_norm(sub, None, None, training=True, eps=eps) - hat_bn) ** 2).mean()
        got = denoising_cost(z_pre, z_hat, present, eps, input_layer=input_layer)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # fewer than 2 present samples: the cost is skipped, finite
    one = torch.zeros(9)
    one[3] = 1.0
    assert denoising_cost(z_pre, z_hat, one, eps).item() == 0.0
    assert denoising_cost(z_pre, z_hat, torch.zeros(9), eps).item() == 0.0
    # batch norm: present samples' statistics, running statistics moved by them only
    bn = torch.nn.BatchNorm1d(5, affine=False)
    reference = torch.nn.BatchNorm1d(5, affine=False).train()
    torch.testing.assert_close(bn_present(bn, z_pre, present, update=True)[keep], reference(sub), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_mean, reference.running_mean)
    torch.testing.assert_close(bn.running_var, reference.running_var)
    # nobody present: running statistics used, not moved (what inference will do)
    before = bn.running_mean.clone(), bn.running_var.clone()
    out = bn_present(bn, z_pre, torch.zeros(9), update=True)
    torch.testing.assert_close(out, (z_pre - before[0]) / torch.sqrt(before[1] + bn.eps))
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])


def test_training_losses_with_the_face_absent_everywhere_are_finite_and_ignore_the_face(net):
    """--modalities audio: every sample's face is flagged absent. The face layers hold only the
    constant "absent" vector (variance 0): their reconstruction must not blow up the loss."""
    import copy
    rng = np.random.default_rng(8)
    clips = [random_clip(rng, int(rng.integers(70, 130)), int(rng.integers(5, 13))) for _ in range(7)]
    batch = batch_inputs(*zip(*clips))
    batch["presence"][:, 1] = 0.0
    other_face = dict(batch, face=rng.normal(3, 7, batch["face"].shape).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 6, 7))
    outs = []
    for inputs in (batch, other_face):
        model = copy.deepcopy(net).train()
        face_bn = [(layer.bn.running_mean.clone(), layer.bn.running_var.clone()) for layer in model.encoders["face"]]
        torch.manual_seed(3)
        outs.append(model.training_losses(**tensors(inputs), labels=labels, ladder="cross"))
        for layer, (mean, var) in zip(model.encoders["face"], face_bn):  # no face sample: not moved
            assert torch.equal(layer.bn.running_mean, mean) and torch.equal(layer.bn.running_var, var)
    for key in ("loss", "ce", "denoise"):
        assert torch.isfinite(outs[0][key]), key
        torch.testing.assert_close(outs[1][key], outs[0][key], atol=0, rtol=0)
    # ~1e7 when the face layers' zero variance divided; this random tiny model's audio costs alone are
    # 37-62 over torch seeds 0-3 (with either face pooling), so the bound is far from both
    assert outs[0]["denoise"].item() < 200.0
    assert outs[0]["loss"].item() < outs[0]["ce"].item() + 25.0


# ---------------------------------------------------------------------------------------------
# issue 11: the top ladder layer, the data level, unlabelled rows, cross_lambda, checkpoint v2


def random_batch(rng, n):
    clips = [random_clip(rng, int(rng.integers(60, 130)), int(rng.integers(5, 12))) for _ in range(n)]
    return tensors(batch_inputs(*zip(*clips)))


def test_the_classifier_is_the_top_ladder_layer(net):
    from edge_ladder.model import LadderLayer, bn_running
    assert isinstance(net.classifier, LadderLayer) and net.classifier.activation == "linear"
    rng = np.random.default_rng(10)
    batch = random_batch(rng, 4)
    pooled = net.pooled(**batch)
    tops = []
    for m in ("audio", "face"):
        h = pooled[m]
        for layer in net.encoders[m]:
            h = layer.infer(h)
        tops.append(h)
    h_joint = net.joint.infer(torch.cat(tops, 1))
    top = net.classifier
    expected = top.gamma * (bn_running(top.bn, top.linear(h_joint)) + top.beta)     # no ReLU: logits < 0 exist
    torch.testing.assert_close(net(**batch), expected, atol=1e-6, rtol=1e-6)
    assert (expected < 0).any()
    # training: the top layer's own denoising cost (its combinator and V_top get gradients in "within")
    model = __import__("copy").deepcopy(net).train()
    out = model.training_losses(**batch, labels=torch.tensor([0, 1, 2, 3]), ladder="within")
    out["loss"].backward()
    for name in ("top_combinator.a", "top_down.weight", "joint_combinator.a"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_data_targets_are_masked_input_statistics(net):
    rng = np.random.default_rng(11)
    clips = [random_clip(rng, 97, 9, missing=(2,)), random_clip(rng, 61, 5)]
    batch = tensors(batch_inputs(*zip(*clips)))
    audio, face = net.normalise(batch["audio"], batch["face"])
    targets = net.data_targets(audio, batch["audio_mask"], face, batch["face_mask"])
    assert targets["audio"].shape == (2, 160) and targets["face"].shape == (2, 144)
    second = audio[1, :61]                                                       # valid frames only
    torch.testing.assert_close(targets["audio"][1, :80], second.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(targets["audio"][1, 80:], torch.sqrt(second.var(0, unbiased=False) + 1e-5),
                               atol=1e-5, rtol=1e-5)
    valid = face[0, [i for i in range(9) if i != 2], 0]                           # (8, 48, 48)
    pooled = F.avg_pool2d(valid[:, None], 4).reshape(8, 144).mean(0)
    torch.testing.assert_close(targets["face"][0], pooled, atol=1e-5, rtol=1e-5)
    # the data heads train (weight lambdas[0]) and their gradient reaches the backbones
    model = __import__("copy").deepcopy(net).train()
    out = model.training_losses(**random_batch(rng, 6), labels=torch.from_numpy(rng.integers(0, 6, 6)),
                                lambdas=(1.0, 0.0, 0.0, 0.0), ladder="within")
    out["loss"].backward()
    for m in ("audio", "face"):
        assert model.decoders[m].data.weight.grad.abs().sum() > 0, m


def test_lambdas_weigh_the_data_level_first_then_layer_0(net):
    """Rasmus et al.'s lambdas[0] weighs the input data: ours weighs the data level, lambdas[1]
    layer 0 (the learned embedding), lambdas[2] the hidden layer, then joint and top."""
    import copy
    rng = np.random.default_rng(13)
    batch, labels = random_batch(rng, 6), torch.from_numpy(rng.integers(0, 6, 6))

    def grads(lambdas):
        model = copy.deepcopy(net).train()
        torch.manual_seed(3)
        out = model.training_losses(**batch, labels=labels, lambdas=lambdas, ladder="within")
        (out["loss"] - out["ce"]).backward()
        return {m: (float(model.decoders[m].data.weight.grad.abs().sum()),
                    float(model.decoders[m].combinators[0].a.grad.abs().sum()),
                    float(model.decoders[m].combinators[1].a.grad.abs().sum())) for m in ("audio", "face")}

    # a combinator at layer l reaches only the costs at l and below (top-down), the data head only
    # the data level
    for m, (data, layer0, hidden) in grads((1.0, 0.0)).items():          # the data level only
        assert data > 0, m
    for m, (data, layer0, hidden) in grads((0.0, 1.0, 0.0)).items():     # layer 0 only
        assert data == 0 and layer0 > 0, m
    for m, (data, layer0, hidden) in grads((0.0, 0.0, 1.0, 0.0, 0.0)).items():   # the hidden layer only
        assert data == 0 and layer0 == 0 and hidden > 0, m


def test_unlabelled_rows_get_no_cross_entropy_but_all_denoising_costs(net):
    import copy
    rng = np.random.default_rng(12)
    batch = random_batch(rng, 8)
    labels = torch.from_numpy(rng.integers(0, 6, 8))
    half = labels.clone()
    half[4:] = -1                                                              # features.UNLABELLED
    for mode in ("within", "cross"):
        outs = []
        for target in (labels, half):
            model = copy.deepcopy(net).train()
            torch.manual_seed(5)
            outs.append(model.training_losses(**batch, labels=target, ladder=mode))
        # the denoising costs do not depend on labels: unlabelled rows take part exactly as labelled ones
        torch.testing.assert_close(outs[1]["denoise"], outs[0]["denoise"], atol=0, rtol=0)
        # cross-entropy: the labelled rows only
        torch.testing.assert_close(outs[1]["ce"], F.cross_entropy(outs[1]["logits"][:4], labels[:4]))
        assert abs(outs[1]["ce"].item() - outs[0]["ce"].item()) > 1e-4
    # an all-unlabelled batch: CE 0, finite loss
    model = copy.deepcopy(net).train()
    out = model.training_losses(**batch, labels=torch.full((8,), -1), ladder="within")
    assert out["ce"].item() == 0.0 and torch.isfinite(out["loss"]) and out["denoise"] > 0
    # "none" (lambda = 0): unlabelled rows still pass through batch normalisation (the fair baseline)
    alone, mixed = copy.deepcopy(net).train(), copy.deepcopy(net).train()
    torch.manual_seed(5)
    a = alone.training_losses(**{k: v[:4] for k, v in batch.items()}, labels=labels[:4], ladder="none")
    torch.manual_seed(5)
    b = mixed.training_losses(**batch, labels=half, ladder="none")
    assert a["denoise"] == 0 and b["denoise"] == 0
    assert not torch.allclose(a["ce"], b["ce"])
    assert not torch.allclose(alone.joint.bn.running_mean, mixed.joint.bn.running_mean)


def test_cross_lambda_weighs_only_the_cross_costs(net):
    import copy
    rng = np.random.default_rng(13)
    batch = random_batch(rng, 6)
    labels = torch.from_numpy(rng.integers(0, 6, 6))
    for mode in ("none", "within", "cross"):
        losses = []
        for cross_lambda in (0.1, 3.0):
            model = copy.deepcopy(net).train()
            torch.manual_seed(6)
            losses.append(model.training_losses(**batch, labels=labels, ladder=mode, cross_lambda=cross_lambda)["loss"])
        if mode == "cross":
            assert losses[1].item() > losses[0].item() + 1e-3
        else:
            torch.testing.assert_close(losses[1], losses[0], atol=0, rtol=0)


def test_participation_ratio_measures_effective_dimensions():
    from edge_ladder.model import participation_ratio
    rng = np.random.default_rng(14)
    assert participation_ratio(rng.normal(size=(4000, 8))) == pytest.approx(8, rel=0.05)
    line = rng.normal(size=(500, 1)) * rng.normal(size=(1, 8))
    assert participation_ratio(line + 1e-4 * rng.normal(size=(500, 8))) == pytest.approx(1, abs=0.01)
    assert np.isnan(participation_ratio(rng.normal(size=(1, 8))))


def test_version_1_checkpoints_are_refused_with_retrain(net, tmp_path):
    from edge_ladder.model import checkpoint_dict
    checkpoint = checkpoint_dict(net)
    assert checkpoint["version"] == 2
    torch.save(checkpoint, tmp_path / "v2.pt")
    load_checkpoint(tmp_path / "v2.pt")
    torch.save(dict(checkpoint, version=1), tmp_path / "v1.pt")
    with pytest.raises(EdgeLadderError, match=r"version 1 is not supported .*top ladder layer.*Retrain with "
                                              r"`edge-ladder train"):
        load_checkpoint(tmp_path / "v1.pt")


def test_population_statistics_standardise_the_inference_path_over_the_clips(net):
    """set_population_statistics: every ladder layer's running statistics become the mean and
    unbiased variance of its z_pre on the inference path over the given clips (present samples
    only), so the deployed graph's normalised z is standardised there; the split into batches
    does not matter, and a modality absent everywhere keeps its statistics."""
    import copy
    from edge_ladder.model import MODALITIES, bn_running
    rng = np.random.default_rng(11)
    clips = [random_clip(rng, int(rng.integers(60, 140)), int(rng.integers(6, 14))) for _ in range(10)]
    inputs = tensors(batch_inputs(*zip(*clips)))
    inputs["presence"][[2, 7], 1] = 0.0                      # two samples without a face
    model = copy.deepcopy(net)
    before = model(**inputs)
    assert model.set_population_statistics([inputs]) == 10
    split = copy.deepcopy(net)
    split.set_population_statistics([{k: v[i:i + 3] for k, v in inputs.items()} for i in range(0, 10, 3)])
    for a, b in zip(model.buffers(), split.buffers()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(model(**inputs), before)       # the momentum average was replaced

    def standardised(layer, z_pre):                          # (N, n) over the population
        torch.testing.assert_close(layer.bn.running_mean, z_pre.mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer.bn.running_var, z_pre.var(0, unbiased=True), atol=1e-6, rtol=1e-4)
        z = bn_running(layer.bn, z_pre)                      # what the deployed graph computes
        torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4, rtol=0)

    with torch.no_grad():
        pooled = model.pooled(**inputs)
        tops = []
        for i, m in enumerate(MODALITIES):
            h, present = pooled[m], inputs["presence"][:, i] > 0
            for layer in model.encoders[m]:
                standardised(layer, layer.pre(h)[present])
                h = layer.infer(h)
            tops.append(h)
        h_joint = torch.cat(tops, dim=1)
        standardised(model.joint, model.joint.pre(h_joint))
        standardised(model.classifier, model.classifier.pre(model.joint.infer(h_joint)))

    faceless = copy.deepcopy(net)
    kept = [(layer.bn.running_mean.clone(), layer.bn.running_var.clone()) for layer in faceless.encoders["face"]]
    inputs["presence"][:, 1] = 0.0
    faceless.set_population_statistics([inputs])
    for layer, (mean, var) in zip(faceless.encoders["face"], kept):
        assert torch.equal(layer.bn.running_mean, mean) and torch.equal(layer.bn.running_var, var)


def test_face_grid_keeps_where_on_the_face_a_feature_is():
    """face_grid 2 (the presets): the same blob at the brows or at the mouth gives different
    embeddings; the spatial mean (face_grid 1) cannot tell them apart (a translation of a blob well
    inside the crop, on the convs' stride grid, moves its features but not their mean)."""
    from edge_ladder.model import FaceBackbone
    face = torch.zeros(2, 1, 1, 48, 48)
    face[0, 0, 0, 8:16, 8:16] = 3.0          # upper left (a brow)
    face[1, 0, 0, 32:40, 32:40] = 3.0        # lower right (the mouth), shifted by 24 px = 3 x 8
    mask = torch.ones(2, 1)
    for grid, differ in ((1, False), (2, True)):
        torch.manual_seed(0)
        backbone = FaceBackbone(model_config("small", face_grid=grid)).eval()
        with torch.no_grad():
            out = backbone(face, mask)
        assert (not torch.allclose(out[0], out[1], atol=1e-5)) == differ, grid
    assert model_config("small").face_grid == 2 and model_config("tiny").face_grid == 2


def test_checkpoints_without_face_grid_load_the_spatial_mean():
    """Checkpoints written before the grid have no face_grid field: they were trained with the
    spatial mean and must load as face_grid 1 (no `spatial` Linear), not as the presets' 2."""
    config = model_config("tiny").__dict__.copy()
    del config["face_grid"]
    old = LadderNet(ModelConfig.from_dict(config))
    assert old.config.face_grid == 1 and old.face_backbone.spatial is None
    assert not any(k.startswith("face_backbone.spatial") for k in old.state_dict())
    with pytest.raises(EdgeLadderError, match="face_grid 4 must be >= 1 and divide"):
        model_config("tiny", face_grid=4)
