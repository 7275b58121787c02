"""Train the pack's embedded video diffusion model on its own synthetic clips (on a CPU or a GPU).

Two ComfyUI-native files come out, loadable by the core loaders without conversion:
  <out>/vae/vdtrack_embedded_wan_vae.safetensors            Wan 2.1 VAE layout (VAELoader), width --vae-width
  <out>/diffusion_models/vdtrack_embedded_wan_i2v.safetensors
                                                            Wan image-to-video DiT (UNETLoader): in_dim 36 =
                                                            16 noisy latent + 4 known-frame mask + 16 image latent,
                                                            no CLIP branch (ComfyUI detects it like Wan 2.2 I2V)

Phase 1, VAE: reconstruction (L1 + MSE, dots weighted up) + a little KL on 32x32 crops of 5-frame windows (one
causal chunk of 1 + 4 frames). Then the per-channel latent mean/std is folded into the 1x1x1 convolutions `conv1`
(encoder side) and `conv2` (decoder side) so that ComfyUI's Wan 2.1 latent normalisation (fixed per-channel
mean/std) gives zero mean and unit variance latents.
Phase 2, DiT: rectified flow matching (x_s = (1-s) x0 + s eps, the model predicts v = eps - x0 at timestep
1000 s, exactly ComfyUI's Wan sampling), on a pool of VAE-encoded clips with the first-frame concat conditioning
built as core WanImageToVideo builds it (VAE latent of [first frame, grey...], mask 1 on the first latent frame),
dropped to all-zero (ComfyUI's "no image" input) with probability --drop-cond. The text context is one all-zero
token (the empty prompt; cross attention then adds a learnt constant) and the text embedding stays frozen.
s is drawn half from Wan's shifted uniform schedule (shift 8, what the nodes sample at) and half logit-normal.
The loss is weighted up on the latent cells holding riding dots, so a painted marker is carried along.

Data: kernels.synthetic.make_clip with random objects (moving, rotating, occluding) over panning backgrounds, pairs
of identical objects whose paths cross, textureless objects and small coloured dots (half pure red) riding on
objects and the background. Everything is seeded; phases checkpoint to <work>/state.pt and resume from it;
the loss curve goes to <work>/train_log.csv. `--budget-minutes` bounds this invocation's wall time (a checkpoint
is written and the run can be resumed); `--vae-minutes` / `--dit-minutes` are the phases' totals across resumes.
On a GPU (`--device cuda`), `--loader-workers N` makes fresh clips in N DataLoader processes beside the training
(`--refresh-every 1 --refresh-clips 2`: two fresh clips per step), and `--init-dit` starts the DiT from another
run's weights (how the shipped DiT was made: docs/embedded_model.md).

usage: python tools/train_embedded.py --out models --work <scratch dir> --budget-minutes 90
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from vdt_dev.paths import COMFYUI_DIR

DIT_NAME = "vdtrack_embedded_wan_i2v.safetensors"
VAE_NAME = "vdtrack_embedded_wan_vae.safetensors"
TEXT_DIM, HEAD_DIM, LATENT_C = 4096, 128, 16
DOT_RADIUS = (3.0, 6.0)    # px: the size of marker that survives the analytic VAE's 8 px cells (radius >= 4)
WAN_SHIFT = 8.0            # ComfyUI's sampling shift for this DiT layout (supported_models.WAN21_T2V)


# ----------------------------------------------------------------------------------------------- ComfyUI

def import_comfy(comfyui_dir: str = "") -> None:
    """Make `comfy` importable and tell it to use the CPU when torch has no GPU (before its first import)."""
    if comfyui_dir and comfyui_dir not in sys.path:
        sys.path.append(comfyui_dir)
    if "comfy.model_management" not in sys.modules and not torch.cuda.is_available():
        import comfy.cli_args

        comfy.cli_args.args.cpu = True


def new_vae(width: int):
    from comfy.ldm.wan.vae import WanVAE

    v = WanVAE(dim=width, z_dim=LATENT_C, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in v.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
            elif p.ndim == 1 or name.endswith(("residual.6.weight", "middle.1.proj.weight")):
                p.zero_()                # residual branches start at zero: every block is its shortcut
            else:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * (3.0 / fan_in) ** 0.5)
        # posterior noise starts small (std e^-4): at log_var 0 the sampled z is mostly noise and the decoder
        # learns to ignore the latent before the encoder can shrink it
        v.conv1.bias[LATENT_C:] = -8.0
    return v


def new_dit(dim: int, layers: int, ffn: int, seed: int):
    """The DiT with seeded weights (std 0.02 matrices, zero biases, unit norms, zero output head): also the
    random-weight control of the evaluation (same seed = same weights)."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    m = WanModel(model_type="t2v", in_dim=2 * LATENT_C + 4, dim=dim, ffn_dim=ffn, num_heads=dim // HEAD_DIM,
                 num_layers=layers, out_dim=LATENT_C, text_dim=TEXT_DIM, operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim == 1 and "norm" in name and leaf == "weight":
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            elif name.startswith("head.head"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def analytic_vae():
    """A Wan 2.1 VAE (width 8) whose weights are set by hand, not trained: the latent of each 8x8 cell holds the
    mean colour of that cell in each of the 4 frames it covers (channels 0-2 the latest frame, then 3-5, 6-8,
    9-11 going back in time; the first latent frame holds frame 0 in channels 0-2; channels 12-15 are 0), and
    the decoder puts each frame back with three bilinear 2x upsamplings. Residual branches and the attention
    projection are zero (each block is its shortcut); the RMS norms before the SiLU heads see one constant channel
    of value K = 100 beside the colours, so they scale by ~sqrt(C)/K and the SiLU works near 0 where it is
    ~x/2 (relative error < 1 %). Blurry by construction (8 px cells), but exact in time and quick: the reason it
    exists is that training the Wan VAE from scratch did not converge in the CPU budget (docs/embedded_model.md)."""
    v = new_vae(8)
    K, s = 100.0, 0.01
    with torch.no_grad():
        for p in v.parameters():
            p.zero_()
        for name, p in v.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)

        def ident(w, pairs, spatial=None, tap=-1):
            """w[out, in, ...] = 1 at the last time tap / centre (or the given spatial taps, averaged)."""
            for o, i in pairs:
                if w.ndim == 5:
                    cy, cx = w.shape[3] // 2, w.shape[4] // 2
                    w[o, i, tap, cy, cx] = 1.0
                elif spatial is None:
                    w[o, i, w.shape[2] // 2, w.shape[3] // 2] = 1.0
                else:
                    for (ky, kx), val in spatial.items():
                        w[o, i, ky, kx] = val

        avg2 = {(0, 0): 0.25, (0, 1): 0.25, (1, 0): 0.25, (1, 1): 0.25}
        bil = {(ky, kx): [0.25, 0.5, 0.25][ky] * [0.25, 0.5, 0.25][kx] for ky in range(3) for kx in range(3)}
        rng3, rng6 = [(c, c) for c in range(3)], [(c, c) for c in range(6)]
        e, d = v.encoder, v.decoder
        # ---- encoder: 3 -> 8 -> (avg) -> 16 -> (avg, time) -> 32 -> (avg, time) -> head
        ident(e.conv1.weight, rng3)
        e.conv1.bias[7] = K
        ident(e.downsamples[2].resample[1].weight, rng3, avg2)
        e.downsamples[2].resample[1].bias[7] = K
        ident(e.downsamples[3].shortcut.weight, rng3 + [(15, 7)])
        ident(e.downsamples[5].resample[1].weight, rng3, avg2)
        e.downsamples[5].resample[1].bias[15] = K
        tc = e.downsamples[5].time_conv
        ident(tc.weight, rng3, tap=2)                                  # latest frame of the window
        ident(tc.weight, [(3 + c, c) for c in range(3)], tap=1)        # the one before
        tc.bias[15] = K
        ident(e.downsamples[6].shortcut.weight, rng6 + [(31, 15)])
        ident(e.downsamples[8].resample[1].weight, rng6, avg2)
        e.downsamples[8].resample[1].bias[31] = K
        tc = e.downsamples[8].time_conv
        ident(tc.weight, rng6, tap=2)
        ident(tc.weight, [(6 + c, c) for c in range(6)], tap=1)
        tc.bias[31] = K
        head_norm, head_conv = e.head[0], e.head[2]
        head_norm.gamma.fill_(s * K / 32 ** 0.5)
        for c in range(12):
            head_conv.weight[c, c, -1, 1, 1] = 2.0 / s
        ident(v.conv1.weight, [(c, c) for c in range(16)])
        v.conv1.bias[LATENT_C:] = -8.0
        # ---- decoder: 16 -> 32 -> (time split, bilinear) -> 16 -> 32 -> (time split, bilinear) -> 16 -> (bilinear)
        ident(v.conv2.weight, [(c, c) for c in range(16)])
        ident(d.conv1.weight, [(c, c) for c in range(12)])
        d.conv1.bias[12] = K
        up = d.upsamples[3]                                            # upsample3d at 32 channels
        # time_conv output = [frame A channels | frame B channels]; A = earlier pair (f1, f2), B = (f3, f4)
        ident(up.time_conv.weight, [(c, 6 + c) for c in range(3)] + [(3 + c, 9 + c) for c in range(3)]
              + [(32 + c, c) for c in range(6)] + [(12, 12), (32 + 12, 12)])
        ident(up.resample[1].weight, rng6, bil)
        up.resample[1].bias[12] = K
        ident(d.upsamples[4].shortcut.weight, rng6 + [(12, 12)])       # 16 -> 32
        up = d.upsamples[7]                                            # upsample3d at 32 channels
        ident(up.time_conv.weight, [(c, 3 + c) for c in range(3)] + [(32 + c, c) for c in range(3)]
              + [(12, 12), (32 + 12, 12)])
        ident(up.resample[1].weight, rng3, bil)
        up.resample[1].bias[12] = K
        up = d.upsamples[11]                                           # upsample2d at 16 channels -> 8
        ident(up.resample[1].weight, rng3, bil)
        up.resample[1].bias[3] = K
        d.head[0].gamma.fill_(s * K / 8 ** 0.5)
        for c in range(3):
            d.head[2].weight[c, c, -1, 1, 1] = 2.0 / s
    return v


def dit_state(m) -> dict:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in m.state_dict().items()}


def vae_moments(v, x: torch.Tensor):
    """WanVAE.encode (chunks of 1, 4, 4, ... frames through the causal cache) returning (mu, log_var)."""
    from comfy.ldm.wan.vae import count_conv3d

    feat = [None] * count_conv3d(v.decoder)
    outs = []
    for i in range(1 + (x.shape[2] - 1) // 4):
        chunk = x[:, :, :1] if i == 0 else x[:, :, 1 + 4 * (i - 1):1 + 4 * i]
        outs.append(v.encoder(chunk, feat_cache=feat, feat_idx=[0]))
    mu, log_var = v.conv1(torch.cat(outs, 2)).chunk(2, dim=1)
    return mu, log_var


def fold_latent_stats(v, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Rewrite conv1/conv2 so the encoder's mu lands at ComfyUI's Wan 2.1 mean/std where it had (mean, std)
    and the decoder undoes it: after this, Wan21.process_in(encode(x)) = (mu_old - mean) / std."""
    from comfy.latent_formats import Wan21

    fmt = Wan21()
    lm, ls = fmt.latents_mean.flatten(), fmt.latents_std.flatten()
    a = ls / std                                   # mu' = a (mu - mean) + lm
    with torch.no_grad():
        w1, b1 = v.conv1.weight, v.conv1.bias       # [32,32,1,1,1]: first 16 outputs are mu
        w1[:LATENT_C] *= a.view(-1, 1, 1, 1, 1)
        b1[:LATENT_C] = (b1[:LATENT_C] - mean) * a + lm
        b1[LATENT_C:] += 2 * torch.log(a)
        w2, b2 = v.conv2.weight, v.conv2.bias       # z = mean + (z' - lm) / a
        flat = w2[:, :, 0, 0, 0].clone()
        b2 += flat @ (mean - lm / a)
        w2 /= a.view(1, -1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------- data

def random_clip(rng: np.random.Generator, frames: int, size: int, dot_clips: float = 0.75):
    """One training clip with the mix of scene kinds described in the module docstring; riding dots in a fraction
    `dot_clips` of the clips."""
    from vdtrack.kernels.synthetic import make_clip

    identical = rng.random() < 0.2
    dots = rng.random() < dot_clips
    return make_clip(frames=frames, height=size, width=size, num_objects=int(rng.integers(1, 5)),
                     points_per_object=0, seed=int(rng.integers(2 ** 31)), identical=identical,
                     textureless=0.3, dots_per_object=int(rng.integers(1, 4)) if dots else 0,
                     background_dots=int(rng.integers(0, 3)) if dots else 0, dot_radius=DOT_RADIUS)


def clip_tensors(clip) -> tuple[torch.Tensor, torch.Tensor]:
    """(video [3,T,H,W] in -1..1, dot coverage [T,H,W])."""
    video = clip.video.permute(3, 0, 1, 2) * 2 - 1
    dots = clip.dot_coverage if clip.dot_coverage is not None else torch.zeros(clip.video.shape[:3])
    return video, dots


def latent_dot_map(dots: torch.Tensor, stride: int = 8) -> torch.Tensor:
    """Dot coverage [T,H,W] -> [t,h,w] max over each latent cell (frame 0 alone, then groups of 4 frames)."""
    groups = [dots[:1]] + [dots[1 + 4 * i:5 + 4 * i] for i in range((dots.shape[0] - 1) // 4)]
    per = torch.stack([g.amax(0) for g in groups])
    return F.max_pool2d(per[:, None], stride)[:, 0]


# ----------------------------------------------------------------------------------------------- state

# the flags a work folder's checkpoint and clip pool are made with: a resume must repeat them
RUN_FLAGS = ("seed", "size", "frames", "vae_kind", "vae_width", "dim", "layers", "ffn")


class Run:
    def __init__(self, args):
        self.a = args
        os.makedirs(args.work, exist_ok=True)
        self.state_path = os.path.join(args.work, "state.pt")
        self.log_path = os.path.join(args.work, "train_log.csv")
        self.t_start = time.monotonic()
        config = {k: getattr(args, k) for k in RUN_FLAGS}
        fresh = {"phase": "vae", "vae_s": 0.0, "dit_s": 0.0, "step": 0, "config": config}
        self.state = (torch.load(self.state_path, weights_only=False, map_location="cpu")
                      if os.path.exists(self.state_path) else fresh)
        made = self.state.get("config", config)          # checkpoints from before this check carry none
        differ = [f"--{k.replace('_', '-')} {made[k]} (asked {config[k]})" for k in RUN_FLAGS if made[k] != config[k]]
        if differ:
            raise SystemExit(f"--work {args.work}: its checkpoint was made with " + ", ".join(differ)
                             + "; resume with the same flags or use another --work folder")

    def out_of_budget(self) -> bool:
        return time.monotonic() - self.t_start > 60.0 * self.a.budget_minutes

    def save(self) -> None:
        tmp = self.state_path + ".tmp"
        torch.save(self.state, tmp)
        os.replace(tmp, self.state_path)

    def log(self, row: dict) -> None:
        new = not os.path.exists(self.log_path)
        with open(self.log_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["phase", "step", "minutes", "loss", "recon", "kl", "lr"])
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in w.fieldnames})


def cosine_lr(base: float, frac: float, warm: float = 0.03) -> float:
    if frac < warm:
        return base * max(frac / warm, 0.05)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warm) / (1 - warm)))))


# ----------------------------------------------------------------------------------------------- phase 1

def train_vae(run: Run) -> None:
    a, st = run.a, run.state
    if a.vae_kind == "analytic":
        v = analytic_vae()
        st["vae_s"] = 60.0 * a.vae_minutes
    else:
        v = new_vae(a.vae_width)
    opt = torch.optim.Adam(v.parameters(), lr=a.vae_lr)
    if "vae" in st:
        v.load_state_dict(st["vae"])
        opt.load_state_dict(st["vae_opt"])
    rng = np.random.default_rng([a.seed, 1, st["step"]])
    torch.manual_seed(a.seed * 1000 + st["step"])
    pool = [clip_tensors(random_clip(rng, 9, a.size)) for _ in range(32)]
    budget = 60.0 * a.vae_minutes
    t_last = time.monotonic()
    while st["vae_s"] < budget and not run.out_of_budget():
        for _ in range(2):                                   # refresh part of the pool every step
            pool[int(rng.integers(len(pool)))] = clip_tensors(random_clip(rng, 9, a.size))
        xs, ws = [], []
        for _ in range(a.vae_batch):
            video, dots = pool[int(rng.integers(len(pool)))]
            t0 = int(rng.integers(0, video.shape[1] - 4))
            y0, x0 = (int(rng.integers(0, a.size - a.vae_crop + 1)) for _ in range(2))
            sl = (slice(t0, t0 + 5), slice(y0, y0 + a.vae_crop), slice(x0, x0 + a.vae_crop))
            xs.append(video[(slice(None),) + sl])
            ws.append(1.0 + 10.0 * dots[sl])
        x, w = torch.stack(xs), torch.stack(ws)[:, None]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(a.vae_lr, st["vae_s"] / budget)
        mu, log_var = vae_moments(v, x)
        log_var = log_var.clamp(-30.0, 20.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        rec = v.decode(z)
        err = rec - x
        recon = (w * (err.abs() + err.square())).mean()
        kl = 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).mean()
        loss = recon + a.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(v.parameters(), 1.0)
        opt.step()
        now = time.monotonic()
        st["vae_s"] += now - t_last
        t_last = now
        st["step"] += 1
        if st["step"] % 10 == 0:
            run.log({"phase": "vae", "step": st["step"], "minutes": f"{st['vae_s'] / 60:.2f}",
                     "loss": f"{loss.item():.5f}", "recon": f"{recon.item():.5f}", "kl": f"{kl.item():.4f}",
                     "lr": f"{opt.param_groups[0]['lr']:.2e}"})
        if st["step"] % 100 == 0:
            st["vae"], st["vae_opt"] = v.state_dict(), opt.state_dict()
            run.save()
    st["vae"], st["vae_opt"] = v.state_dict(), opt.state_dict()
    if st["vae_s"] >= budget:
        # latent statistics on fresh full-size clips, folded into the VAE
        with torch.no_grad():
            mus = torch.cat([vae_moments(v, clip_tensors(random_clip(rng, a.frames, a.size))[0][None])[0]
                             for _ in range(24)])
        mean = mus.mean(dim=(0, 2, 3, 4))
        std = mus.std(dim=(0, 2, 3, 4))
        unused = std < 1e-4                                  # channels the analytic VAE leaves at 0
        mean[unused], std[unused] = 0.0, 1.0
        fold_latent_stats(v, mean, std)
        st["vae"] = {k: t.detach().clone() for k, t in v.state_dict().items()}
        st.pop("vae_opt", None)
        st["latent_mean"], st["latent_std"] = mean, std
        st["phase"], st["step"] = "pool", 0
        save_vae(run, v)
    run.save()


def publish(tmp: str, path: str) -> None:
    """Move a finished model file into place, readable as any file the user creates (safetensors writes 0600)."""
    os.replace(tmp, path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_matching(m, sd: dict, source: str, a) -> None:
    """m.load_state_dict(sd), refused with a message naming `source` when sd was made for another architecture."""
    own = m.state_dict()
    bad = sorted(k for k in own if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape))
    bad += sorted(k for k in sd if k not in own)
    if bad:
        k = bad[0]
        got = tuple(sd[k].shape) if k in sd else "missing"
        want = tuple(own[k].shape) if k in own else "not in this model"
        raise SystemExit(f"{source}: made for another architecture than --dim {a.dim} --layers {a.layers} --ffn "
                         f"{a.ffn} ({len(bad)} tensors differ; first {k}: {got} vs {want})")
    m.load_state_dict({k: t.float() for k, t in sd.items()})


def save_vae(run: Run, v) -> str:
    from safetensors.torch import save_file

    d = os.path.join(run.a.out, "vae")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, VAE_NAME)
    save_file({k: t.detach().float().contiguous() for k, t in v.state_dict().items()}, path + ".tmp",
              metadata={"vdtrack": "embedded model, tools/train_embedded.py"})
    publish(path + ".tmp", path)
    return path


def load_trained_vae(run: Run):
    v = new_vae(8 if run.a.vae_kind == "analytic" else run.a.vae_width)
    v.load_state_dict(run.state["vae"])
    v.eval()
    return v


# ----------------------------------------------------------------------------------------------- pool

def encode_batch(v, fmt, videos: torch.Tensor, dmaps: torch.Tensor):
    """Clips [N,3,T,H,W] in -1..1 (+ latent dot maps [N,t,h,w]) -> (model-space latents, model-space first-frame
    concat latents, dot maps), fp16, on the VAE's device."""
    dev = next(v.parameters()).device
    x = videos.to(dev)
    padded = torch.zeros_like(x)                           # grey (0.5 -> 0 in -1..1) after the first frame
    padded[:, :, :1] = x[:, :, :1]
    with torch.no_grad():
        return (fmt.process_in(v.encode(x)).to(torch.float16), fmt.process_in(v.encode(padded)).to(torch.float16),
                dmaps.to(dev, torch.float16))


def raw_clip(rng, a) -> tuple[torch.Tensor, torch.Tensor]:
    """One fresh training clip: (video [3,T,H,W] in -1..1, latent dot map [t,h,w])."""
    video, dots = clip_tensors(random_clip(rng, a.frames, a.size, a.dot_clips))
    return video, latent_dot_map(dots)


class ClipStream(torch.utils.data.IterableDataset):
    """An endless stream of fresh training clips (raw_clip) for a DataLoader with --loader-workers processes:
    worker w draws from the seeded stream [seed, *key, w], so clip making runs beside the training (on a GPU the
    model outpaces one CPU core's clips). Our choice; with --loader-workers 0 clips are made in-process."""

    def __init__(self, a, key: tuple):
        self.a, self.key = a, [int(k) for k in key]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            torch.set_num_threads(1)                  # one core per worker process, not the trainer's threads
        rng = np.random.default_rng([self.a.seed, *self.key, info.id if info else 0])
        while True:
            yield raw_clip(rng, self.a)


def clip_source(a, rng, key: tuple, n: int):
    """Endless batches of n fresh clips (videos [n,3,T,H,W], latent dot maps [n,t,h,w]): in-process from `rng`
    with --loader-workers 0 (the seeded stream the CPU runs used), else from ClipStream(a, key) workers."""
    if a.loader_workers <= 0:
        while True:
            clips = [raw_clip(rng, a) for _ in range(n)]
            yield torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips])
    else:
        yield from torch.utils.data.DataLoader(ClipStream(a, key), batch_size=n, num_workers=a.loader_workers,
                                               persistent_workers=True)


def build_pool(run: Run) -> None:
    """Encode --pool clips once: model-space latent, model-space first-frame concat latent, dot map."""
    from comfy.latent_formats import Wan21

    a, st = run.a, run.state
    fmt = Wan21()
    v = load_trained_vae(run).to(a.device)
    path = os.path.join(a.work, "pool.pt")
    pool = torch.load(path) if os.path.exists(path) else {"x0": [], "img": [], "dots": []}
    rng = np.random.default_rng([a.seed, 2, len(pool["x0"])])
    src = clip_source(a, rng, (2, len(pool["x0"])), 8)
    while len(pool["x0"]) < a.pool and not run.out_of_budget():
        x0, img, dots = encode_batch(v, fmt, *next(src))
        pool["x0"] += list(x0.cpu())
        pool["img"] += list(img.cpu())
        pool["dots"] += list(dots.cpu())
        if len(pool["x0"]) % 64 == 0 or len(pool["x0"]) >= a.pool:
            torch.save(pool, path + ".tmp")
            os.replace(path + ".tmp", path)
            run.log({"phase": "pool", "step": len(pool["x0"])})
    if len(pool["x0"]) >= a.pool:
        st["phase"], st["step"] = "dit", 0
        run.save()


# ----------------------------------------------------------------------------------------------- phase 2

def sample_sigma(rng: torch.Generator, n: int, sigma_min: float = 0.0) -> torch.Tensor:
    """Training noise levels: half Wan's shifted uniform, half logit-normal, mapped onto [sigma_min, 1]."""
    dev = rng.device
    u = torch.rand(n, generator=rng, device=dev)
    shifted = WAN_SHIFT * u / (1 + (WAN_SHIFT - 1) * u)
    logit_normal = torch.sigmoid(torch.randn(n, generator=rng, device=dev))
    pick = torch.rand(n, generator=rng, device=dev) < 0.5
    s = torch.where(pick, shifted, logit_normal)
    return (sigma_min + (1.0 - sigma_min) * s).clamp(1e-3, 1.0)


def train_dit(run: Run) -> None:
    a, st = run.a, run.state
    dev = torch.device(a.device)
    pool = torch.load(os.path.join(a.work, "pool.pt"))
    x0_all = torch.stack(pool["x0"]).float().to(dev)
    img_all = torch.stack(pool["img"]).float().to(dev)
    dots_all = torch.stack(pool["dots"]).float().to(dev)
    del pool
    n = x0_all.shape[0]
    m = new_dit(a.dim, a.layers, a.ffn, a.seed)
    if "dit" not in st and a.init_dit:                             # warm start: another run's (EMA) weights
        from safetensors.torch import load_file

        load_matching(m, load_file(a.init_dit), f"--init-dit {a.init_dit}", a)
        print(f"DiT initialised from {a.init_dit}", flush=True)
    elif a.init_dit:
        print(f"--init-dit ignored: resuming the DiT checkpoint in {a.work}", flush=True)
    m.to(dev)
    for p in m.text_embedding.parameters():
        p.requires_grad_(False)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.dit_lr, weight_decay=0.01)
    ema = {k: t.detach().clone().float() for k, t in m.state_dict().items()}
    if "dit" in st:
        load_matching(m, st["dit"], f"--work {a.work} (its checkpoint)", a)
        opt.load_state_dict(st["dit_opt"])
        ema = {k: t.to(dev) for k, t in st["dit_ema"].items()}
    live = m.state_dict()
    ema_list, live_list = [ema[k] for k in live], [live[k] for k in live]
    g = torch.Generator(device=dev).manual_seed(a.seed * 7919 + st["step"])
    from comfy.latent_formats import Wan21

    fmt, vae, rng = Wan21(), load_trained_vae(run).to(dev), np.random.default_rng([a.seed, 3, st["step"]])
    src = None
    budget = 60.0 * a.dit_minutes
    t_last = time.monotonic()
    ctx = torch.zeros(a.dit_batch, 1, TEXT_DIM, device=dev)
    while st["dit_s"] < budget and not run.out_of_budget():
        if a.refresh_every > 0 and st["step"] % a.refresh_every == 0 and st["step"] > 0:
            # fresh clips replace random pool entries (indices drawn first: the CPU runs' order)
            js = torch.tensor([int(rng.integers(n)) for _ in range(a.refresh_clips)], device=dev)
            if src is None:
                src = clip_source(a, rng, (4, st["step"]), a.refresh_clips)
            x0_new, img_new, dots_new = encode_batch(vae, fmt, *next(src))
            x0_all[js], img_all[js], dots_all[js] = x0_new.float(), img_new.float(), dots_new.float()
        idx = torch.randint(0, n, (a.dit_batch,), generator=g, device=dev)
        x0, img, dmap = x0_all[idx], img_all[idx], dots_all[idx]
        if torch.rand(1, generator=g, device=dev).item() < 0.5:   # horizontal flip of the whole latent
            x0, img, dmap = x0.flip(-1), img.flip(-1), dmap.flip(-1)
        b, c, t, h, w = x0.shape
        sigma = sample_sigma(g, b, a.sigma_min)
        eps = torch.randn(x0.shape, generator=g, device=dev)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * eps
        mask = torch.zeros(b, 4, t, h, w, device=dev)
        mask[:, :, :1] = 1.0
        keep = (torch.rand(b, generator=g, device=dev) >= a.drop_cond).float().view(-1, 1, 1, 1, 1)
        inp = torch.cat([xt, mask * keep, img * keep], 1)
        for grp in opt.param_groups:
            grp["lr"] = cosine_lr(a.dit_lr, st["dit_s"] / budget)
        pred = m(inp, sigma * 1000.0, ctx[:b])
        weight = 1.0 + a.dot_weight * dmap[:, None]
        loss = (weight * (pred - (eps - x0)).square()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(a.ema, (1 + st["step"]) / (10 + st["step"]))
            torch._foreach_mul_(ema_list, decay)
            torch._foreach_add_(ema_list, live_list, alpha=1 - decay)
        now = time.monotonic()
        st["dit_s"] += now - t_last
        t_last = now
        st["step"] += 1
        if st["step"] % 10 == 0:
            run.log({"phase": "dit", "step": st["step"], "minutes": f"{st['dit_s'] / 60:.2f}",
                     "loss": f"{loss.item():.5f}", "lr": f"{opt.param_groups[0]['lr']:.2e}"})
        if st["step"] % 200 == 0:
            st["dit"], st["dit_opt"], st["dit_ema"] = m.state_dict(), opt.state_dict(), ema
            run.save()
            save_dit(run, ema)
    st["dit"], st["dit_opt"], st["dit_ema"] = m.state_dict(), opt.state_dict(), ema
    if st["dit_s"] >= budget:
        st["phase"] = "done"
    run.save()
    save_dit(run, ema)


def save_dit(run: Run, ema: dict) -> str:
    from safetensors.torch import save_file

    d = os.path.join(run.a.out, "diffusion_models")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, DIT_NAME)
    save_file({k: t.to("cpu", torch.float16).contiguous() for k, t in ema.items()}, path + ".tmp",
              metadata={"vdtrack": "embedded model, tools/train_embedded.py", "step": str(run.state["step"])})
    publish(path + ".tmp", path)
    return path


# ----------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True,
                    help="models folder written (vae/, diffusion_models/); the repo's models/ replaces the "
                         "shipped files")
    ap.add_argument("--work", required=True, help="scratch folder: checkpoint, clip pool, train_log.csv")
    ap.add_argument("--comfyui", default=COMFYUI_DIR,
                    help="ComfyUI source folder when `comfy` is not importable")
    ap.add_argument("--budget-minutes", type=float, default=90.0, help="wall-time limit of this invocation")
    ap.add_argument("--vae-minutes", type=float, default=18.0, help="VAE phase total (training time)")
    ap.add_argument("--dit-minutes", type=float, default=40.0, help="DiT phase total (training time)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device of the training (cpu, cuda, cuda:N)")
    ap.add_argument("--loader-workers", type=int, default=0,
                    help="processes making fresh clips beside the training (0 = in-process, as the CPU runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="clip width = height, pixels")
    ap.add_argument("--frames", type=int, default=17, help="clip length for the DiT (4k+1)")
    ap.add_argument("--vae-kind", choices=["trained", "analytic"], default="analytic",
                    help="trained: learn the Wan VAE (phase 1); analytic: the hand-set cell-mean VAE (no phase 1)")
    ap.add_argument("--vae-width", type=int, default=8)
    ap.add_argument("--vae-batch", type=int, default=4)
    ap.add_argument("--vae-crop", type=int, default=32)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--pool", type=int, default=400, help="clips encoded before the DiT phase")
    ap.add_argument("--refresh-every", type=int, default=4,
                    help="DiT steps between two refreshes of the pool (0 = never)")
    ap.add_argument("--refresh-clips", type=int, default=1, help="fresh clips replacing pool entries per refresh")
    ap.add_argument("--init-dit", default="",
                    help="warm start: a DiT .safetensors of the same architecture (e.g. the shipped CPU model)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--dit-batch", type=int, default=8)
    ap.add_argument("--dit-lr", type=float, default=4e-4)
    ap.add_argument("--drop-cond", type=float, default=0.15)
    ap.add_argument("--dot-weight", type=float, default=8.0)
    ap.add_argument("--dot-clips", type=float, default=0.75, help="fraction of clips with riding dots")
    ap.add_argument("--sigma-min", type=float, default=0.0,
                    help="DiT noise levels drawn on [sigma-min, 1] (0 = the whole schedule)")
    ap.add_argument("--ema", type=float, default=0.998)
    a = ap.parse_args(argv)
    fin = math.isfinite
    checks = [                                  # (flag, valid, what it must be)
        ("budget-minutes", fin(a.budget_minutes) and a.budget_minutes > 0, "a positive number"),
        ("vae-minutes", fin(a.vae_minutes) and a.vae_minutes >= 0, "a number >= 0"),
        ("dit-minutes", fin(a.dit_minutes) and a.dit_minutes > 0, "a positive number"),
        ("threads", a.threads >= 1, "an integer >= 1"),
        ("loader-workers", a.loader_workers >= 0, "an integer >= 0"),
        ("size", a.size >= 16 and a.size % 16 == 0, "a multiple of 16 pixels (8 px latent cells, 2x2 patches)"),
        ("frames", a.frames >= 5 and (a.frames - 1) % 4 == 0, "4k+1 frames, at least 5"),
        ("vae-width", a.vae_width >= 1, "an integer >= 1"),
        ("vae-batch", a.vae_batch >= 1, "an integer >= 1"),
        ("vae-crop", 16 <= a.vae_crop <= a.size and a.vae_crop % 8 == 0, "a multiple of 8 pixels in [16, --size]"),
        ("vae-lr", fin(a.vae_lr) and a.vae_lr > 0, "a positive number"),
        ("kl-weight", fin(a.kl_weight) and a.kl_weight >= 0, "a number >= 0"),
        ("pool", a.pool >= 1, "an integer >= 1"),
        ("refresh-every", a.refresh_every >= 0, "an integer >= 0 (0 = never)"),
        ("refresh-clips", a.refresh_clips >= 1, "an integer >= 1"),
        ("dim", a.dim >= HEAD_DIM and a.dim % HEAD_DIM == 0, f"a multiple of {HEAD_DIM} (the head size ComfyUI fixes)"),
        ("layers", a.layers >= 1, "an integer >= 1"),
        ("ffn", a.ffn >= 1, "an integer >= 1"),
        ("dit-batch", a.dit_batch >= 1, "an integer >= 1"),
        ("dit-lr", fin(a.dit_lr) and a.dit_lr > 0, "a positive number"),
        ("drop-cond", 0.0 <= a.drop_cond <= 1.0, "a probability in [0, 1]"),
        ("dot-weight", fin(a.dot_weight) and a.dot_weight >= 0, "a number >= 0"),
        ("dot-clips", 0.0 <= a.dot_clips <= 1.0, "a fraction in [0, 1]"),
        ("sigma-min", 0.0 <= a.sigma_min < 1.0, "in [0, 1)"),
        ("ema", 0.0 <= a.ema < 1.0, "a decay in [0, 1)"),
    ]
    for flag, ok, what in checks:
        if not ok:
            ap.error(f"--{flag}: must be {what}, got {getattr(a, flag.replace('-', '_'))}")
    if a.vae_kind == "trained" and a.vae_minutes <= 0:
        ap.error("--vae-minutes: the trained VAE needs a positive training time")
    try:
        dev = torch.device(a.device)
    except (RuntimeError, ValueError) as e:
        ap.error(f"--device: not a torch device ({e})")
    if dev.type not in ("cpu", "cuda"):
        ap.error(f"--device: cpu or cuda[:N], got {a.device}")
    if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
        ap.error(f"--device: {a.device} is not available to this torch ({torch.__version__})")
    for flag in ("out", "work"):
        if os.path.exists(getattr(a, flag)) and not os.path.isdir(getattr(a, flag)):
            ap.error(f"--{flag}: {getattr(a, flag)} exists and is not a folder")
    if a.init_dit:
        try:
            from safetensors import safe_open

            with safe_open(a.init_dit, "pt") as f:
                f.keys()
        except Exception as e:                     # missing, unreadable or not a safetensors file
            ap.error(f"--init-dit: cannot read {a.init_dit} as safetensors ({type(e).__name__}: {e})")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True                 # our choice: TF32 matrix products on a GPU
    import_comfy(a.comfyui)
    run = Run(a)
    if a.init_dit and "dit" not in run.state:                        # refuse a mismatched file before any work
        from safetensors.torch import load_file

        load_matching(new_dit(a.dim, a.layers, a.ffn, a.seed), load_file(a.init_dit), f"--init-dit {a.init_dit}", a)
    if run.state["phase"] == "done" and run.state["dit_s"] < 60.0 * a.dit_minutes:
        run.state["phase"] = "dit"                           # a larger --dit-minutes continues a finished run
    while not run.out_of_budget() and run.state["phase"] != "done":
        phase = run.state["phase"]
        print(f"[{time.strftime('%H:%M:%S')}] phase {phase}", flush=True)
        {"vae": train_vae, "pool": build_pool, "dit": train_dit}[phase](run)
        if run.state["phase"] == phase:
            break                                            # budget hit inside the phase
    vae = "hand-set" if a.vae_kind == "analytic" else f"{run.state['vae_s'] / 60:.1f} min"
    written = [p for p in (os.path.join(a.out, "vae", VAE_NAME), os.path.join(a.out, "diffusion_models", DIT_NAME))
               if os.path.isfile(p)]
    print(f"[{time.strftime('%H:%M:%S')}] stopped in phase {run.state['phase']} (vae {vae}, dit "
          f"{run.state['dit_s'] / 60:.1f} min, step {run.state['step']})"
          + ("" if run.state["phase"] == "done" else "; run the same command again to go on"), flush=True)
    print("models in --out: " + (", ".join(written) if written else "none yet"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
