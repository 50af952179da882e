"""Reference test of the ladder core (issue 11 section 6): the classic semi-supervised result.

The digits experiment rebuilt from the project's own ladder pieces (LadderLayer, Combinator,
denoising_cost from edge_ladder.model): scikit-learn's bundled load_digits (8x8 images, no
download), 50 labels (5 per class), the rest of the train split unlabelled, a fully connected
ladder 64-100-50-10 (Rasmus et al. 2015: top-down from BN(softmax of the corrupted output),
Gaussian combinators, lambdas 1000 / 10 / 0.1 / 0.1) against the same network with lambda = 0
(the same noise, the same labelled + unlabelled batches through batch normalisation, no
denoising cost). Paired seeds: each seed fixes the labelled subset, the initial weights and the
batches of both runs. It fails if the paired mean gain in test accuracy drops below +5 points.

Measured (2 shared CPU cores): 400 steps, ladder 0.810 vs lambda = 0 0.698, +11.2 points (95 % CI
+-2.9), 5/5 seeds, 77 s; 600 steps: 0.822 vs 0.682, +14.0 (+-3.1), 5/5, 136 s CPU.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn (the dev extra) bundles load_digits")

from edge_ladder.model import Combinator, LadderLayer, bn_batch, denoising_cost  # noqa: E402

F = torch.nn.functional

DIMS = (64, 100, 50, 10)          # input, two hidden, top (softmax)
LAMBDAS = (1000.0, 10.0, 0.1, 0.1)  # Rasmus et al.: 1000 on the input, 10 on the first hidden, 0.1 above
NOISE = 0.3
STEPS = 400                       # Adam 2e-3, linear decay over the last third (ladder reference)
SEEDS = (0, 1, 2, 3, 4)
LABELS_PER_CLASS = 5


class DigitsLadder(torch.nn.Module):
    """Fully connected ladder of LadderLayers: layer 0 = BN(x) (no weights: the data itself),
    ReLU hidden layers, a linear top layer whose softmax is the output."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [LadderLayer(DIMS[0], DIMS[0], input_layer=True)]
            + [LadderLayer(DIMS[i], DIMS[i + 1], activation="linear" if i + 2 == len(DIMS) else "relu")
               for i in range(len(DIMS) - 1)])
        self.combinators = torch.nn.ModuleList([Combinator(d) for d in DIMS])
        self.down = torch.nn.ModuleList([torch.nn.Linear(DIMS[l + 1], DIMS[l], bias=False)
                                         for l in range(len(DIMS) - 1)])

    def forward(self, x):
        """Inference: clean path, running statistics -> logits (B, 10)."""
        h = x
        for layer in self.layers:
            h = layer.infer(h)
        return h

    def losses(self, x, labels, ladder: bool):
        """x (B, 64), labels (B,) with -1 for unlabelled rows -> (loss, ce, denoise)."""
        everyone = torch.ones(x.shape[0])
        h_clean, h_noisy, clean, noisy = x, x, [], []
        for layer in self.layers:
            h_clean, z_pre = layer.clean(h_clean, everyone)
            h_noisy, z_noisy = layer.corrupted(h_noisy, everyone, NOISE)
            clean.append(z_pre)                                           # (B, N_l)
            noisy.append(z_noisy)
        labelled = labels >= 0
        ce = F.cross_entropy(h_noisy[labelled], labels[labelled])
        if not ladder:
            return ce, ce, torch.zeros(())
        z_hat = self.combinators[-1](noisy[-1], bn_batch(torch.softmax(h_noisy, dim=1), 1e-5))   # (B, 10)
        denoise, loss = 0.0, ce
        for l in reversed(range(len(DIMS))):
            if l < len(DIMS) - 1:
                z_hat = self.combinators[l](noisy[l], bn_batch(self.down[l](z_hat), 1e-5))       # (B, N_l)
            cost = denoising_cost(clean[l], z_hat, everyone, self.layers[l].bn.eps, input_layer=(l == 0))
            denoise = denoise + cost
            loss = loss + LAMBDAS[l] * cost
        return loss, ce, denoise


def digits_split(seed: int):
    """Train/test split fixed across seeds (the test set never changes); the seed picks the 50
    labelled train images (5 per class), the other train images are the unlabelled pool."""
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(np.float32)                          # (1797, 64) in [0, 1]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(12345).permutation(len(x))
    test, train = order[:500], order[500:]
    rng = np.random.default_rng(seed)
    labelled = np.concatenate([rng.choice(train[y[train] == c], LABELS_PER_CLASS, replace=False) for c in range(10)])
    unlabelled = np.setdiff1d(train, labelled)
    return x, y, labelled, unlabelled, test


def run(seed: int, ladder: bool) -> float:
    """Train one model; -> test accuracy. Same seed: same init, labels, batches for both modes."""
    x, y, labelled, unlabelled, test = digits_split(seed)
    torch.manual_seed(seed)
    model = DigitsLadder().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng([seed, 1])
    x_l, y_l = torch.from_numpy(x[labelled]), torch.from_numpy(y[labelled])
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * min(1.0, (STEPS - step) / (STEPS / 3))
        batch = rng.choice(unlabelled, 100, replace=False)
        inputs = torch.cat([x_l, torch.from_numpy(x[batch])])                   # (150, 64)
        labels = torch.cat([y_l, torch.full((100,), -1)])                       # (150,)
        loss, _, _ = model.losses(inputs, labels, ladder)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x[test])).argmax(1).numpy()
    return float((predicted == y[test]).mean())


@pytest.mark.slow
def test_ladder_beats_lambda_zero_on_digits_with_50_labels():
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead (and nondeterminism)
    ladder = np.array([run(seed, ladder=True) for seed in SEEDS])
    baseline = np.array([run(seed, ladder=False) for seed in SEEDS])
    gain = ladder - baseline
    half_width = 2.776 * gain.std(ddof=1) / np.sqrt(len(gain))          # t(0.975, 4): 95 % interval
    print(f"\ndigits, {LABELS_PER_CLASS * 10} labels, {len(SEEDS)} paired seeds, {STEPS} steps: "
          f"ladder {ladder.mean():.3f} ({' '.join(f'{a:.3f}' for a in ladder)}), lambda=0 {baseline.mean():.3f} "
          f"({' '.join(f'{a:.3f}' for a in baseline)}), gain {100 * gain.mean():+.1f} points "
          f"(95 % CI +-{100 * half_width:.1f}), wins {(gain > 0).sum()}/{len(gain)}")
    assert gain.mean() >= 0.05, f"paired mean gain {100 * gain.mean():+.1f} points < +5"
