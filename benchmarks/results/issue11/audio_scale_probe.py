"""Diagnostic (issue 11, not the product's model): a plain cross-entropy CNN on log-mel, one actor fold.

    DATA=audio91x82.npz ACTORS=91 PER_ACTOR=82 python audio_scale_probe.py base 0 40   # variant fold epochs [seed]
    FEATURES=crema30-features python audio_scale_probe.py base 0 40                    # a prepared features dir

DATA comes from audio_scale_render.py. Variant tokens: wide, deep, bn, std, cmvn, vtlp, speed, gain, specaug, aug,
drop, wd, lr1 (see the code). Writes VARIANT[-AxP]-fFOLD-sSEED.json beside this file."""
import sys, json, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from edge_ladder.features import load_split, actor_folds, read_splits
torch.set_num_threads(1)
variant, fold, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
torch.manual_seed(seed); np.random.seed(seed)
import os
from types import SimpleNamespace
if os.environ.get("DATA"):
    d = np.load(os.environ["DATA"]); off = np.concatenate([[0], np.cumsum(d["lengths"])])
    A = d["audio"].astype(np.float32)
    clips = [SimpleNamespace(actor=str(a), label=int(l), audio=A[off[i]:off[i + 1]])
             for i, (a, l) in enumerate(zip(d["actor"], d["label"]))
             if int(os.environ.get("PER_ACTOR", 82)) > 0]
    n_act = int(os.environ.get("ACTORS", 91)); keep = sorted({c.actor for c in clips})[:n_act]
    per = int(os.environ.get("PER_ACTOR", 82)); cnt = {}
    sel = []
    for c in clips:
        if c.actor in keep and cnt.get(c.actor, 0) < per:
            cnt[c.actor] = cnt.get(c.actor, 0) + 1; sel.append(c)
    clips = sel
    sp = {"k": 5, "seed": 0}
    variant_tag = f"{variant}-A{n_act}x{per}"
else:
    FD = os.environ["FEATURES"]
    clips = load_split(FD, "all")
    sp = read_splits(FD)
    variant_tag = variant
s = actor_folds([c.actor for c in clips], k=sp["k"], fold=fold, seed=sp["seed"])
print(len(clips), "clips", len({c.actor for c in clips}), "actors", {k: len(v) for k, v in s.items() if k in ("train", "dev", "test")})
def pick(name): return [c for c in clips if c.actor in set(s[name])]
tr, dv, te = pick("train"), pick("dev"), pick("test")
T = max(c.audio.shape[0] for c in clips)
def pack(cs):
    x = np.zeros((len(cs), T, 80), np.float32); m = np.zeros((len(cs), T), np.float32)
    for i, c in enumerate(cs): x[i, :len(c.audio)] = c.audio; m[i, :len(c.audio)] = 1
    return torch.tensor(x), torch.tensor(m), torch.tensor([c.label for c in cs])
Xtr, Mtr, Ytr = pack(tr); Xte, Mte, Yte = pack(te); Xdv, Mdv, Ydv = pack(dv)
valid = Mtr.bool()
mu = Xtr[valid].mean(0); sd = Xtr[valid].std(0) + 1e-5
def norm(x, m): return ((x - mu) / sd) * m[..., None]
Rtr = Xtr.clone()
Xtr, Xte, Xdv = norm(Xtr, Mtr), norm(Xte, Mte), norm(Xdv, Mdv)
from edge_ladder.frontend import mel_to_hz, hz_to_mel
centres = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 82))[1:-1]
def augment(raw, m):
    """raw log-mel (B, T, 80), mask (B, T) -> augmented normalised batch, new mask"""
    out = torch.zeros_like(raw); newm = torch.zeros_like(m)
    for i in range(len(raw)):
        x = raw[i]; L = int(m[i].sum())
        x = x[:L]
        if "vtlp" in variant:
            a = np.random.uniform(0.9, 1.1)
            idx = np.interp(centres / a, centres, np.arange(80))
            lo = np.floor(idx).astype(int); hi = np.minimum(lo + 1, 79); w = torch.tensor(idx - lo, dtype=torch.float32)
            x = x[:, lo] * (1 - w) + x[:, hi] * w
        if "speed" in variant:
            s_ = np.random.uniform(0.87, 1.15)
            L2 = max(8, min(T, int(round(L / s_))))
            x = F.interpolate(x.T[None], size=L2, mode="linear", align_corners=False)[0].T
            L = L2
        if "gain" in variant:
            x = x + np.random.uniform(-0.92, 0.92)
        out[i, :L] = x; newm[i, :L] = 1
    out = norm(out, newm)
    if "specaug" in variant:
        for i in range(len(out)):
            for _ in range(2):
                f0 = np.random.randint(0, 72); out[i, :, f0:f0 + np.random.randint(0, 9)] = 0
                L = int(newm[i].sum()); t0 = np.random.randint(0, max(1, L - 20)); out[i, t0:t0 + np.random.randint(0, 21)] = 0
    return out, newm
if "cmvn" in variant:   # per-clip mean removal (utterance-level CMN)
    def cmn(x, m):
        mean = (x * m[..., None]).sum(1, keepdim=True) / m.sum(1, keepdim=True)[..., None]
        return (x - mean) * m[..., None]
    Xtr, Xte, Xdv = cmn(Xtr, Mtr), cmn(Xte, Mte), cmn(Xdv, Mdv)
C = 128 if "wide" in variant else 48
E = 48
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        layers = [nn.Conv1d(80, C, 5, padding=2), nn.Conv1d(C, C, 5, stride=2, padding=2)]
        if "deep" in variant:
            layers += [nn.Conv1d(C, C, 5, stride=2, padding=2), nn.Conv1d(C, C, 5, stride=2, padding=2)]
        layers += [nn.Conv1d(C, E, 5, stride=2, padding=2)]
        s.convs = nn.ModuleList(layers)
        s.bns = nn.ModuleList([nn.BatchNorm1d(C) for _ in layers[:-1]]) if "bn" in variant else None
        pooled = 2 * E if "std" in variant else E
        s.head = nn.Sequential(nn.BatchNorm1d(pooled), *( [nn.Dropout(0.5)] if "drop" in variant else []), nn.Linear(pooled, 48), nn.ReLU(), nn.Linear(48, 6))
    def forward(s, x, m):
        x = x.transpose(1, 2)
        for i, conv in enumerate(s.convs):
            x = conv(x * m[:, None, :])
            if i < len(s.convs) - 1:
                if s.bns is not None: x = s.bns[i](x)
                x = F.relu(x)
            if conv.stride[0] == 2: m = m[:, ::2]
        cnt = m.sum(1, keepdim=True).clamp(min=1)
        mean = (x * m[:, None]).sum(2) / cnt
        if "std" in variant:
            var = (((x - mean[..., None]) ** 2) * m[:, None]).sum(2) / cnt
            mean = torch.cat([mean, (var + 1e-5).sqrt()], 1)
        return s.head(mean)
net = Net()
lr = 1e-3 if "lr1" in variant else 2e-3
opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-3 if "wd" in variant else 0)
bs = 16
def evaluate(X, M, Y):
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(X[i:i+64], M[i:i+64]) for i in range(0, len(X), 64)])
    net.train()
    return F.cross_entropy(out, Y).item(), (out.argmax(1) == Y).float().mean().item()
hist = []
t0 = time.time()
best = (9, 0, 0)
for ep in range(1, epochs + 1):
    perm = torch.randperm(len(Xtr))
    for g in opt.param_groups: g["lr"] = lr * min(1.0, 3 * (epochs - ep + 1) / epochs)
    for i in range(0, len(perm) - bs + 1, bs):
        b = perm[i:i+bs]
        x, mb = Xtr[b], Mtr[b]
        if any(t in variant for t in ("vtlp", "speed", "gain", "specaug")):
            x, mb = augment(Rtr[b], Mtr[b])
        if "aug" in variant.split("_"):
            x = x + 0.3 * torch.randn_like(x) * mb[..., None]
        loss = F.cross_entropy(net(x, mb), Ytr[b])
        opt.zero_grad(); loss.backward(); opt.step()
    trl, tra = evaluate(Xtr, Mtr, Ytr); dvl, dva = evaluate(Xdv, Mdv, Ydv); tel, tea = evaluate(Xte, Mte, Yte)
    hist.append(dict(ep=ep, train_ce=round(trl, 3), train_acc=round(tra, 3), dev_ce=round(dvl, 3), dev_acc=round(dva, 3), test_acc=round(tea, 3)))
    if dvl < best[0]: best = (dvl, ep, tea)
    print(variant, fold, hist[-1], f"{time.time()-t0:.0f}s", flush=True)
json.dump(dict(variant=variant, fold=fold, seed=seed, hist=hist, best_dev_loss_epoch=best[1], test_acc_at_best=best[2]),
          open(str(__import__("pathlib").Path(__file__).parent) + f"/{variant_tag}-f{fold}-s{seed}.json", "w"))
print("RESULT", variant, fold, "best dev-loss epoch", best[1], "test acc", best[2])
