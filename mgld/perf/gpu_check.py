"""The prepared GPU check of issue 13 (``scripts/gpu_check.sh``; docs/notes/perf.md).

On full-size random weights at 720p (LR 180x320), 5 frames, 3 steps, one process runs the configurations of
:data:`VARIANTS` one after the other (each once untimed, then timed; the same networks): the authors' fp16
autocast (the default), bf16 under autocast, bf16 with weights cast once (``--precision bf16``), tiles batched
(``tile_batch: auto``), channels_last (with the previous two: the ``--fast`` preset), overlap 16, shifted tiles,
the memory plan (model offload; frame mode with the automatic VAE tile), ``torch.compile`` and CUDA graphs — every
option applied by the pipeline itself, as ``mgld infer`` runs it. Per configuration: seconds per frame
(measured, and extrapolated to 50 steps), the denoiser's achieved TFLOP/s and MFU against the bf16 matrix rate
measured first, the peak memory per stage, and the largest difference of its frames from the reference
configuration's. It also reports the attention kernels that ran,
the counted (meta-device) memory of a decode tile next to the measured one, and stops starting configurations
when ``--budget`` seconds are spent. Results go to ``<out>/gpu_check.json`` (after every configuration) and
``<out>/gpu_check.md``; the table is printed last.

``--cpu-smoke`` runs the same code on the CPU with the tiny networks, a small clip, one step and no warm-up run
(fp32, and bf16 with weights cast once in one configuration — set on the loaded config, since the schema refuses
bf16 with ``infer.device: cpu``; no fp16 autocast or compilation): the check of the check.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path

# (name, overrides, reference name for the frame difference, GPU only)
VARIANTS = [
    ("fp16-autocast", "infer.precision=fp16 infer.cast_weights=false", None, True),
    ("bf16-autocast", "infer.precision=bf16 infer.cast_weights=false", "fp16-autocast", True),
    ("bf16", "infer.precision=bf16 infer.cast_weights=true", "bf16-autocast", False),
    ("bf16-batch", "infer.precision=bf16 sampling.tile_batch=auto", "bf16", False),
    ("bf16-batch-cl", "infer.precision=bf16 sampling.tile_batch=auto infer.channels_last=true", "bf16-batch", False),
    ("bf16-batch-ov16", "infer.precision=bf16 sampling.tile_batch=auto sampling.latent_tile_overlap=16",
     "bf16-batch", False),
    ("bf16-batch-shifted", "infer.precision=bf16 sampling.tile_batch=auto sampling.tile_schedule=shifted",
     "bf16-batch", False),
    ("bf16-batch-offload", "infer.precision=bf16 sampling.tile_batch=auto infer.offload=model", "bf16-batch", False),
    ("bf16-batch-frame-auto", "infer.precision=bf16 sampling.tile_batch=auto sampling.pixel_tiling=frame "
     "decode.tile_size=auto", None, False),
    ("bf16-batch-compile", "infer.precision=bf16 sampling.tile_batch=auto infer.compile=true", "bf16-batch", True),
    ("bf16-batch-graphs", "infer.precision=bf16 sampling.tile_batch=auto infer.compile=true "
     "infer.compile_mode=reduce-overhead", "bf16-batch", True),
]


def matmul_tflops(device, dtype, n: int = 8192, iters: int = 10) -> float:
    """Measured dense matrix-product rate (TFLOP/s) on random data: the MFU ceiling."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12


def environment(device) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        env.update(name=props.name, capability=list(torch.cuda.get_device_capability(device)),
                   multiprocessors=props.multi_processor_count, memory_gib=total / 2**30, free_gib=free / 2**30)
    return env


def _row(name: str, r: dict) -> dict:
    den, stages = r["denoiser"], r["stages"]
    steps = max(1, r["denoising_steps"])
    return {
        "variant": name,
        "s_per_frame": r["seconds_per_frame"],
        "s_per_frame_50": r["seconds_per_frame_50_steps"],
        "unet_s_per_step": stages["encoder+unet"]["seconds"] / steps,
        "guidance_s_per_step": stages["guidance"]["seconds"] / steps,
        "decode_s": stages["vae_decode"]["seconds"],
        "calls_per_step": den["calls"] / steps,
        "tflops": den["tflops_achieved"],
        "mfu": den["mfu"],
        "peak_gib": r["peak_bytes"] / 2**30,
        "stage_peak_gib": {k: v["peak_bytes"] / 2**30 for k, v in stages.items()},
        "work_ratio": r["work_ratio"]["measured"],
    }


def markdown(rows: list[dict], env: dict, settings: dict) -> str:
    size, ceiling = settings["size"], env.get("matmul_tflops")
    lines = [
        f"{env.get('name', env['device'])}, torch {env['torch']}; LR {size[0]}x{size[1]}, {settings['frames']} frames, "
        f"{settings['steps']} steps; bf16 matmul "
        + (f"{ceiling:.0f} TFLOP/s (the MFU ceiling)" if ceiling else "not measured"),
        "",
        "| variant | s/frame | s/frame @50 steps | UNet s/step | calls/step | TFLOP/s | MFU | peak GiB | "
        "work | max diff vs ref |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error'][:80]} |||||||||")
            continue
        diff = r.get("diff")
        diff_text = f"{diff['max_abs']:.0f}/255 vs {r['reference']} ({diff['psnr']:.1f} dB)" if diff else ""
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        tflops = f"{r['tflops']:.3g}" if r["tflops"] is not None else "n/a"
        lines.append(f"| {r['variant']} | {r['s_per_frame']:.3f} | {r['s_per_frame_50']:.3f} | "
                     f"{r['unet_s_per_step']:.3f} | {r['calls_per_step']:.0f} | {tflops} | {mfu} | "
                     f"{r['peak_gib']:.2f} | {r['work_ratio'] or 0:.2f} | {diff_text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/gpu_check")))
    p.add_argument("--cpu-smoke", action="store_true", help="tiny networks on the CPU, small clip (tests the check)")
    p.add_argument("--budget", type=float, default=240.0, help="seconds after which no configuration is started")
    p.add_argument("--size", default=None, help="LR size HxW (default 180x320; --cpu-smoke 32x48)")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 3; --cpu-smoke 2)")
    p.add_argument("--only", default=None, help="comma-separated variant names to run")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from mgld._compat import install_distutils_shim

    install_distutils_shim()  # basicsr imports distutils, gone from Python 3.12 (the device machine's)
    import torch

    from mgld.config import load_config
    from mgld.io.atomic import atomic_write
    from mgld.perf.benchmark import (
        attention_report_of,
        build_base,
        output_difference,
        parse_overrides,
        prepare_variant,
        run_variant,
        write_panned_clip,
    )
    from mgld.perf.work import padded_size
    from mgld.pipeline.memory import decode_tile_bytes

    t0 = time.perf_counter()
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu-smoke to test the check on the CPU")
    device = "cpu" if smoke else "cuda"
    size = args.size or ("32x48" if smoke else "180x320")
    height, width = (int(v) for v in size.split("x"))
    steps = args.steps or (1 if smoke else 3)
    common = ["infer.random_weights=true", f"infer.device={device}", f"sampling.steps={steps}", "chunk.frames=5"]
    config = "tiny" if smoke else "infer"
    if smoke:  # 16-latent tiles overlapping by 8: a 16x24 latent needs 2 tiles, as 720p needs 8 of 64
        common += ["sampling.latent_tile_size=16", "sampling.latent_tile_overlap=8"]
    else:
        common += ["flow.method=raft"]
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(torch.device(device))
    if not smoke:
        env["matmul_tflops"] = matmul_tflops(torch.device(device), torch.bfloat16)
    peak = env.get("matmul_tflops")
    report = {"environment": env, "settings": {"config": config, "size": [height, width], "frames": args.frames,
                                               "steps": steps, "common": common}, "variants": {}, "rows": []}

    def save() -> None:
        atomic_write(args.out / "gpu_check.json", json.dumps(report, indent=1, default=str))
        atomic_write(args.out / "gpu_check.md", markdown(report["rows"], env, report["settings"]) + "\n")

    base_cfg = load_config(config, common)
    start = time.perf_counter()
    base = build_base(base_cfg)
    report["settings"]["build_seconds"] = time.perf_counter() - start
    selected = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="mgld-gpu-check-") as tmp:
        clip = write_panned_clip(Path(tmp) / "lr", args.frames, height, width)
        outputs = {}
        for name, overrides, reference, gpu_only in VARIANTS:
            if (smoke and gpu_only) or (selected and name not in selected):
                continue
            if time.perf_counter() - t0 > args.budget:
                report["rows"].append({"variant": name, "error": "skipped: time budget spent"})
                continue
            extra = parse_overrides(overrides)
            if smoke:  # the CPU has no fp16 autocast, and its bf16 is slow: bf16 in one variant, fp32 elsewhere
                extra = [o for o in extra if not o.startswith("infer.cast_weights")]
                extra = [o.replace("=bf16", "=fp32") for o in extra]
                extra = [o.replace("overlap=16", "overlap=4") for o in extra]
            try:
                cfg = load_config(config, common + extra)
                if smoke and name == "bf16":  # bf16 with the weights cast once, on the CPU (a pipeline allows it)
                    cfg.infer.precision, cfg.infer.cast_weights = "bf16", True
                variant = prepare_variant(base, cfg, name)
                out = Path(tmp) / name
                if not smoke:  # warm-up: compilation, autotuning, allocator growth
                    first = run_variant(variant, clip, out, peak_tflops=peak)
                result = run_variant(variant, clip, out, peak_tflops=peak)
                result["first_run_seconds"] = None if smoke else first["total_seconds"]
                row = _row(name, result)
                outputs[name] = out
                if reference in outputs:
                    row["reference"] = reference
                    row["diff"] = output_difference(outputs[reference], out)
                if name in ("fp16-autocast", "bf16"):
                    result["attention"] = attention_report_of(variant, (height, width))
                if name == "bf16-batch":
                    frame = padded_size((height, width), cfg.infer.scale, cfg.infer.min_short_side,
                                        padding=cfg.infer.padding)
                    tile = cfg.decode.tile_size
                    result["decode_memory"] = {
                        "counted_gib": decode_tile_bytes(tile, frame, cfg.chunk.frames, torch.bfloat16) / 2**30,
                        "measured_stage_peak_gib": result["stages"]["vae_decode"]["peak_bytes"] / 2**30,
                        "note": "measured includes the resident weights; counted is activations + blend buffers",
                    }
                report["variants"][name] = result
                report["rows"].append(row)
                del variant
            except Exception as err:  # noqa: BLE001 - one failing configuration must not stop the check
                report["rows"].append({"variant": name, "error": f"{type(err).__name__}: {err}"})
                report["variants"][name] = {"error": traceback.format_exc()}
            if device == "cuda":
                torch.cuda.empty_cache()
            save()
    report["settings"]["seconds"] = time.perf_counter() - t0
    save()
    print(markdown(report["rows"], env, report["settings"]))
    print(f"\n{time.perf_counter() - t0:.0f} s; results in {args.out}/gpu_check.json")
    return 0 if all("error" not in r or r["error"].startswith("skipped") for r in report["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
