"""Performance of the library on the offline default model (``make bench``).

Measures, on SmolLM2-135M with 16 sequences of 128 tokens: a plain forward
pass; a forward pass capturing ``resid_post`` at every layer (the overhead
ratio); harvest throughput at ``resid_post.15`` against plain-forward
throughput; TopK SAE training throughput on cached activations (4,096
latents, k = 32, batch 1,024); and cold (GGUF) and cached model loads.

Timings on a small shared machine swing, so each figure is the median of
interleaved repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import torch

import actlab
from actlab import harvest, hooks, sae

warnings.filterwarnings("ignore")


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Run each function once per round, ``repeats`` rounds, after one warm-up round; medians in seconds."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--sae-steps", type=int, default=30)
    parser.add_argument("--skip-cold-load", action="store_true")
    parser.add_argument("--smoke-only", action="store_true", help="only print the recorded smoke-run times")
    args = parser.parse_args()
    if args.smoke_only:
        print_smoke_times()
        return
    threads = actlab.seed_everything(0)
    print(f"actlab {actlab.__version__}, torch {torch.__version__}, {threads} threads\n")

    # --- model loads -------------------------------------------------------------------------------
    if not args.skip_cold_load:
        with tempfile.TemporaryDirectory() as cold_cache:
            previous = os.environ.get("ACTLAB_CACHE_DIR")
            os.environ["ACTLAB_CACHE_DIR"] = cold_cache
            cold = timed(lambda: actlab.load_model("smollm2-135m"))
            if previous is None:
                os.environ.pop("ACTLAB_CACHE_DIR")
            else:
                os.environ["ACTLAB_CACHE_DIR"] = previous
        print(f"cold load (GGUF -> safetensors)      {cold:8.2f} s")
    lm = actlab.load_model("smollm2-135m")
    cached = statistics.median(timed(lambda: actlab.load_model("smollm2-135m")) for _ in range(5))
    print(f"cached load (median of 5)            {cached:8.2f} s")

    # --- forward, capture-all, harvest ---------------------------------------------------------------
    ids = torch.randint(0, lm.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    all_resid = [f"resid_post.{i}" for i in range(lm.n_layers)]
    site = f"resid_post.{args.layer}"
    model = lm.model

    def plain() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    def capture_all() -> None:
        with torch.inference_mode(), hooks.capture(lm, all_resid) as acts:
            model(input_ids=ids, use_cache=False)
        assert len(acts) == lm.n_layers

    def harvest_site() -> None:
        with torch.inference_mode():
            hooks.run_with_cache(lm, site, input_ids=ids)

    times = median_interleaved({"plain": plain, "capture": capture_all, "harvest": harvest_site}, args.repeats)
    tokens = ids.numel()
    plain_tps, harvest_tps = tokens / times["plain"], tokens / times["harvest"]
    print(f"\n{args.batch} x {args.seq} tokens, median of {args.repeats} interleaved runs")
    print(f"plain forward                        {times['plain'] * 1e3:8.1f} ms  {plain_tps:9,.0f} tok/s")
    print(f"capture resid_post at all {lm.n_layers} layers    {times['capture'] * 1e3:8.1f} ms  "
          f"{times['capture'] / times['plain']:.2f}x plain")
    print(f"harvest {site:<28} {times['harvest'] * 1e3:8.1f} ms  {harvest_tps:9,.0f} tok/s  "
          f"{harvest_tps / plain_tps:.2f}x plain tok/s")

    # --- SAE training on cached activations -----------------------------------------------------------
    cfg = sae.SAEConfig(d_in=lm.d_model, d_sae=4096, kind="topk", k=32, batch_size=1024)
    n_windows = max(1, cfg.batch_size * args.sae_steps // (args.seq - 1) + 1)
    windows = torch.randint(0, lm.vocab_size, (n_windows, args.seq), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as shards:
        started = time.perf_counter()
        stored = harvest.harvest(lm, windows, site, shards, progress=False)
        harvest_seconds = time.perf_counter() - started
        acts = stored.load()
    cfg = sae.SAEConfig(**{**cfg.__dict__, "epochs": cfg.batch_size * args.sae_steps / acts.shape[0]})
    sae.train_sae(acts[: cfg.batch_size * 3], sae.SAEConfig(**{**cfg.__dict__, "epochs": 1.0}), progress=False)
    _, log = sae.train_sae(acts, cfg, progress=False)
    end_to_end = log.tokens / (log.seconds + harvest_seconds * log.tokens / acts.shape[0])
    print(f"\nTopK SAE ({lm.d_model} -> {cfg.d_sae}, k={cfg.k}, batch {cfg.batch_size}), {log.tokens:,} tokens")
    print(f"SAE training on cached activations   {log.tokens_per_second:9,.0f} tok/s")
    print(f"harvest + SAE training end to end    {end_to_end:9,.0f} tok/s")
    print_smoke_times()


def print_smoke_times() -> None:
    """The notebooks' smoke-run times and CI projection, as the last test session measured them."""
    from actlab import runner

    report = runner.load_smoke_times()
    if not report.get("runs"):
        print("\nsmoke runs: none measured yet (`make test` records them in runs/smoke-times.json)")
        return
    best = runner.smoke_seconds_by_notebook(report)
    print(f"\nsmoke runs on smollm2-135m (test session of {report['date'][:10]}, commit {report['commit']})")
    for slug, seconds in sorted(best.items(), key=lambda kv: -kv[1]):
        print(f"  {slug:28s} {seconds:6.1f} s" + ("  over 60 s" if seconds > 60 else ""))
    if "projection" in report:
        proj = report["projection"]
        print(f"median {proj['median_s']:.1f} s; projected CI at {proj['notebooks']} notebooks: "
              f"{proj['projected_min']:.1f} min")


if __name__ == "__main__":
    main()
