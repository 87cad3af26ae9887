"""The ``eecompile`` command line: thin shims over the library.

Only this module turns errors into messages: a typed ``EecompileError`` becomes
"Error: Type: message / hint: next step" with exit status 1, a usage error exits 2, an
interrupt exits 130 with nothing half-written, and a broken invariant asks for a bug report.
Converter and TensorFlow log lines (written by native code to the process's stderr) go to a
log file unless ``--verbose``; see ``eecompile.clilog``. Start-up imports only click and the
light parts of the package: torch and TensorFlow load inside the commands that need them.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from eecompile.core.names import BACKENDS, POLICY_NAMES, RETIRED_BACKENDS, TARGETS
from eecompile.errors import EecompileError, InternalError
from eecompile.model.zoo import ZOO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
BACKEND_CHOICES = click.Choice([*BACKENDS, *RETIRED_BACKENDS])
EXIT_INTERRUPTED = 130


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _verbose() -> bool:
    return os.environ.get("EECOMPILE_VERBOSE") == "1"


def handle_errors(fn):
    """Typed errors -> exit 1 with the message and hint; Ctrl-C -> exit 130; bugs -> a report request."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EecompileError as exc:
            msg = f"{type(exc).__name__}: {exc.message}"
            if exc.hint:
                msg += f"\n  hint: {exc.hint}"
            raise click.ClickException(msg) from exc
        except KeyboardInterrupt:
            click.echo("Interrupted: stopped. Nothing half-written is left behind: outputs are written whole or "
                       "not at all.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except InternalError as exc:
            raise click.ClickException(f"InternalError: {exc}") from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: no input of the user's should get here
            if _verbose():
                raise
            raise click.ClickException(
                f"InternalError: {type(exc).__name__}: {exc}\n  this is a bug in eecompile: rerun with "
                "eecompile --verbose for the traceback and please report it") from exc

    return wrapper


class FloatList(click.ParamType):
    """``0.9`` or ``0.9,0.8,0.7``: one value for every early exit, or one per exit."""

    name = "T[,T...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (float, int, list)):
            return value
        try:
            vals = [float(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a number or a comma-separated list of numbers", param, ctx)
        return vals[0] if len(vals) == 1 else vals


@click.group()
@click.version_option(package_name="eecompile")
@click.option("--verbose", "-v", is_flag=True, help="Show converter/TensorFlow logs and tracebacks of bugs.")
@click.option("--data-dir", type=click.Path(), envvar="EECOMPILE_FMNIST_DIR",
              help="Directory with the Fashion-MNIST IDX .gz files (default: Debian's dataset-fashion-mnist).")
def main(verbose: bool, data_dir: str | None) -> None:
    """eecompile: early-exit networks from PyTorch to phones and boards.

    \b
    Example:
      eecompile demo
      eecompile export dsnet-fmnist --target tflite-int8 --calib-data fashion-mnist:train:512 -o out/b
      eecompile run out/b --input fashion-mnist:test:16
    """
    if verbose:
        os.environ["EECOMPILE_VERBOSE"] = "1"
    if data_dir:
        os.environ["EECOMPILE_FMNIST_DIR"] = data_dir


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the zoo as JSON.")
def zoo(as_json: bool) -> None:
    """List the built-in models.

    \b
    Example:
      eecompile zoo
    """
    from eecompile.model.zoo import zoo_weights_path

    rows = [{"name": e.name, "dataset": e.dataset, "training": e.recipe.mode, "description": e.description,
             "cached": zoo_weights_path(e.name).exists()} for e in ZOO.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<15} {r['dataset']:<14} {'cached' if r['cached'] else 'untrained':<10} {r['description']}")


@main.command()
@click.argument("model", type=click.Choice(sorted(ZOO)), metavar="MODEL")
@handle_errors
def train(model: str) -> None:
    """Train a zoo MODEL (or load it from the cache) and print per-exit validation accuracy.

    \b
    Example:
      eecompile train dsnet-fmnist
    """
    from eecompile.data.datasets import load_data
    from eecompile.model.loading import load_zoo
    from eecompile.model.train import exit_accuracies
    from eecompile.model.zoo import zoo_weights_path

    m = load_zoo(model)
    acc = exit_accuracies(m, load_data(f"{ZOO[model].dataset}:val"))
    click.echo(f"{model}: weights {zoo_weights_path(model)}")
    click.echo("val accuracy per exit: " + ", ".join(f"{100 * a:.2f}%" for a in acc))


def _default_val(calib_data: str) -> str | None:
    from eecompile.data.datasets import DATASETS

    name = calib_data.split(":")[0]
    return f"{name}:val:1000" if name in DATASETS else None


@main.command()
@click.argument("model")
@click.option("--target", "-t", type=click.Choice(list(TARGETS)), default="tflite-int8", show_default=True)
@click.option("--calib-data", "-c", required=True,
              help="NAME[:SPLIT[:N]] (fashion-mnist, digits) or a .npy/.npz file of inputs (NCHW float32).")
@click.option("--val-data", help="Held-out data for validation, >= 100 samples (default: the val split of a built-in "
                                 "dataset, else a quarter of --calib-data held out).")
@click.option("--output", "-o", required=True, type=click.Path(), help="Bundle directory to create.")
@click.option("--split-heads", is_flag=True, help="Export each exit head as its own graph.")
@click.option("--policy", type=click.Choice(POLICY_NAMES), default="max-prob", show_default=True)
@click.option("--threshold", type=FloatList(), help="Exit threshold: one for every early exit, or one per exit.")
@click.option("--onnxsim", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="auto: convert without onnxsim, retry with it if the float graph disagrees with ONNX Runtime.")
@click.option("--allow-mismatch", is_flag=True, help="Write the bundle even if validation fails.")
@click.option("--no-pack", is_flag=True,
              help="TFLite: skip stages.tflite (every graph as a signature of one file, used by the C harness).")
@click.option("--no-trunks", is_flag=True,
              help="Skip the per-stage trunk graphs (the segment without its head, run where calibration drops "
                   "an exit).")
@click.option("--force", is_flag=True, help="Replace an existing bundle at -o.")
@click.option("--harness", "harness_dir", type=click.Path(), help="Also generate and build the C harness here.")
@click.option("--tokenizer", type=click.Path(), help="A tokenizer.json (tokenizers) for a model that takes token ids: "
                                                      "shipped in the bundle, so eecompile run --text works.")
@click.option("--json", "as_json", is_flag=True, help="Print the validation report as JSON.")
@handle_errors
def export(model, target, calib_data, val_data, output, split_heads, policy, threshold, onnxsim, allow_mismatch,
           no_pack, no_trunks, force, harness_dir, tokenizer, as_json) -> None:
    """Export MODEL (zoo name or path/to/file.py:function) to a validated per-stage bundle.

    \b
    Example:
      eecompile export dsnet-fmnist --target tflite-int8 --calib-data fashion-mnist:train:512 -o out/dsnet-int8
      eecompile export my_model.py:build --target onnx --calib-data calib.npy --val-data val.npz -o out/my-onnx
    """
    from eecompile.bundle.io import check_output_dir
    from eecompile.core.policies import make_policy
    from eecompile.data.datasets import load_data, parse_data_spec

    # everything that can be checked without work is checked first: output, data specs, policy
    check_output_dir(output, force)
    if harness_dir:
        from eecompile.harness.generate import check_harness_dir

        check_harness_dir(harness_dir, force)
    val_spec = val_data or _default_val(calib_data)
    parse_data_spec(calib_data)
    if val_spec:
        parse_data_spec(val_spec, "val")
    from eecompile.export.pipeline import ExportOptions
    from eecompile.export.pipeline import export as do_export
    from eecompile.model.loading import canonical_source, load_model
    from eecompile.report.tables import validation_table

    source = canonical_source(model)
    m = load_model(model, quiet=as_json, expect=lambda arch: make_policy(policy, threshold, arch.n_stages))
    opts = ExportOptions(split_heads=split_heads, policy=policy, threshold=threshold, onnxsim=onnxsim,
                         allow_mismatch=allow_mismatch, pack=not no_pack, trunks=not no_trunks, force=force,
                         quiet=as_json, model_source=source, tokenizer=tokenizer)
    bundle = do_export(m, target, load_data(calib_data), output,
                       val_data=load_data(val_spec, "val") if val_spec else None, options=opts)
    v = bundle.manifest.validation
    harness_exe = None
    if harness_dir:
        from eecompile.harness import build_harness, generate_harness

        harness_exe = str(build_harness(generate_harness(bundle, harness_dir, force=force)).ee_run)
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle.root), "validation": v, "harness": harness_exe}, indent=2))
        return
    _console().print(validation_table(v))
    n_req = sum(b["requantize"] for b in bundle.manifest.boundaries)
    click.echo(f"bundle: {bundle.root} ({len(bundle.manifest.stages)} stages, {n_req} boundary requantization(s))")
    if harness_exe:
        click.echo(f"C harness: {harness_exe}")
    if v["failures"]:
        click.echo(f"WARNING: {len(v['failures'])} validation check(s) failed; kept because of --allow-mismatch")


@main.command()
@click.argument("bundle_dir", type=click.Path())
@click.option("--data", "-d", required=True, help="NAME[:SPLIT[:N]] or a .npz with x (and y); >= 100 samples.")
@click.option("--model", "model_spec", help="PyTorch reference (default: the bundle's model source).")
@click.option("--backend", type=BACKEND_CHOICES)
@click.option("--allow-mismatch", is_flag=True, help="Exit 0 even if checks fail.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def validate(bundle_dir, data, model_spec, backend, allow_mismatch, as_json) -> None:
    """Validate every exit of BUNDLE_DIR against its PyTorch model on DATA.

    \b
    Example:
      eecompile validate out/dsnet-int8 --data fashion-mnist:test:2000
    """
    from eecompile.bundle.graphs import check_backend
    from eecompile.bundle.io import load_bundle
    from eecompile.data.datasets import load_data, parse_data_spec

    b = load_bundle(bundle_dir)
    if backend:
        check_backend(backend, b.manifest.target)
    spec = model_spec or b.manifest.model_source
    if not spec:
        raise click.UsageError("the bundle records no model source; pass --model")
    parse_data_spec(data, "val")
    from eecompile.export.validate import check_model_matches, validate_bundle
    from eecompile.model.loading import load_model
    from eecompile.report.tables import validation_table

    model = load_model(spec, quiet=as_json, expect=lambda arch: check_model_matches(b, arch))
    report = validate_bundle(b, model, load_data(data, "val"), backend=backend,
                             data_hint="pass --data with at least 100 held-out samples, e.g. fashion-mnist:test:1000")
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        _console().print(validation_table(d))
    if report.failures and not allow_mismatch:
        raise report.error()


@main.command()
@click.argument("bundle_dir", type=click.Path())
@click.option("--input", "-i", "input_spec", help=".npy/.npz file (NCHW float32; token ids for a text model) or "
                                                  "NAME[:SPLIT[:N]].")
@click.option("--text", "texts", multiple=True, help="A text to classify (repeatable): the bundle's tokenizer makes "
                                                     "its ids.")
@click.option("--policy", type=click.Choice(POLICY_NAMES), help="Exit policy (default: the bundle's).")
@click.option("--threshold", type=FloatList(), help="One threshold for every early exit, or one per exit "
                                                    "(default: the bundle's).")
@click.option("--max-exit", type=int, help="Stop at this exit at the latest (budget-forced exit).")
@click.option("--deadline-us", type=float, help="Stop at the deepest exit whose profiled p99 completion fits "
                                                "(needs a calibrated bundle's anytime table).")
@click.option("--backend", type=BACKEND_CHOICES)
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per sample, plus a summary.")
@handle_errors
def run(bundle_dir, input_spec, texts, policy, threshold, max_exit, deadline_us, backend, threads, as_json) -> None:
    """Run BUNDLE_DIR with early exits on inputs; print class, exit and stage times per sample.

    \b
    Example:
      eecompile run out/dsnet-int8 --input fashion-mnist:test:8
      eecompile run out/dsnet-int8 --input x.npy --policy entropy --threshold 0.2 --max-exit 1 --json
      eecompile run out/text-bundle --text "a gripping, funny film" --text "dull"
    """
    import numpy as np

    from eecompile.data.datasets import load_data, parse_data_spec
    from eecompile.report.tables import run_table
    from eecompile.runtime.runner import Runtime

    if (input_spec is None) == (not texts):
        raise click.UsageError("give --input or --text (one of them)")
    if input_spec is not None:
        parse_data_spec(input_spec, "test")
    rt = Runtime(bundle_dir, backend=backend, n_threads=threads)
    kw = dict(policy=policy, thresholds=threshold, max_exit=max_exit, deadline_us=deadline_us)
    if texts:
        res, enc = rt.run_text(list(texts), **kw)
        data = None
    else:
        data = load_data(input_spec, "test")
        res = rt.run(data.x, **kw)
    rows = res.to_rows(rt.class_names)
    if texts:
        for i, row in enumerate(rows):
            row.update(text=texts[i], n_tokens=int(enc.n_tokens[i]), truncated=bool(enc.truncated[i]),
                       unknown_tokens=int(enc.n_unknown[i]))
    summary = {"n": len(rows), "mean_latency_us": float(res.latency_us.mean()),
               "exit_share": (np.bincount(res.exit_idx, minlength=rt.n_exits) / len(rows)).tolist()}
    if data is not None and data.y is not None:
        summary["accuracy"] = float(np.mean(res.class_idx == data.y))
    if as_json:
        click.echo(json.dumps({"samples": rows, "summary": summary}, indent=2))
        return
    for row in rows:
        if row.get("truncated"):
            click.echo(f"note: text {row['sample']} has {row['n_tokens']} tokens; it was truncated to the model's "
                       f"{rt.manifest.text.max_length}")
        if row.get("unknown_tokens"):
            click.echo(f"note: text {row['sample']}: {row['unknown_tokens']} word(s) unknown to the tokenizer")
    if len(rows) <= 50:
        _console().print(run_table(rows))
    click.echo(json.dumps(summary))


@main.command()
@click.argument("bundle_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest.")
@handle_errors
def info(bundle_dir, as_json) -> None:
    """Show a bundle's stages, exits and validation (checksums verified).

    \b
    Example:
      eecompile info out/dsnet-int8
    """
    from eecompile.bundle.io import load_bundle

    b = load_bundle(bundle_dir)
    m = b.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    click.echo(f"{m.name}  target={m.target}  schema={m.schema_version}  created={m.created_utc}")
    for i, inp in enumerate(m.input):
        ids = f", values {inp.value_range[0]}..{inp.value_range[1]}" if inp.value_range else ""
        role = f" ({m.text.inputs[i]})" if m.text and i < len(m.text.inputs) else ""
        click.echo(f"  input{'' if len(m.input) == 1 else f' {i}'}{role}: {inp.source_dtype} "
                   f"{tuple(inp.torch_shape[1:])}{ids}")
    if m.text:
        click.echo(f"  text: {m.text.file} (vocabulary {m.text.vocab_size}, max length {m.text.max_length}, pad id "
                   f"{m.text.pad_id}, truncate {m.text.truncation})")
    for s, e in zip(m.stages, m.exits):
        files = ", ".join(f"{g.file} ({g.size_bytes} B)" for g in s.graphs)
        click.echo(f"  stage {s.stage_idx}: {s.macs / 1e6:.2f}M MACs, {s.n_params} params, {files}; "
                   f"exit {e.exit_idx}: {e.policy} {e.threshold:g}")
    if m.packed:
        click.echo(f"  packed: {m.packed.file} ({m.packed.size_bytes} B), signatures "
                   f"{', '.join(m.packed.signature_keys)}")
    if m.validation:
        from eecompile.report.tables import validation_table

        _console().print(validation_table(m.validation))
    from eecompile.profile.schema import bundle_profiles

    for path, prof, status in bundle_profiles(b):
        if prof is None:
            click.echo(f"  profile {path.name}: {status}")
            continue
        full = prof["exits"][-1]["latency_us"]["p50"] if prof["exits"] else float("nan")
        click.echo(f"  profile {prof['device']['id']} ({prof['device']['model']}, {prof['created_utc']}): "
                   f"full path p50 {full:.1f} us [{status}]")


@main.command()
@click.argument("bundle_dir", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(), help="Directory for the generated C sources.")
@click.option("--build", "do_build", is_flag=True, help="Also build libee + ee_run + ee_profile.")
@click.option("--arch", type=click.Choice(["host", "aarch64", "android-arm64"]), default="host", show_default=True,
              help="android-arm64: PIE executables for a phone (clang + lld, no NDK), checked against bionic.")
@click.option("--min-sdk", type=click.IntRange(21, 40), default=None,
              help="Android API level the android-arm64 build must load on (default: 23, LiteRT 2.3's minimum).")
@click.option("--sanitize", is_flag=True, help="Build with ASan + UBSan.")
@click.option("--per-stage-files", is_flag=True,
              help="Open each stage file as its own model instead of the bundle's packed stages.tflite.")
@click.option("--force", is_flag=True, help="Replace an existing harness directory at -o.")
@handle_errors
def harness(bundle_dir, output, do_build, arch, min_sdk, sanitize, per_stage_files, force) -> None:
    """Generate the C harness for BUNDLE_DIR (bundle constants as C + the harness sources).

    \b
    Example:
      eecompile harness out/dsnet-int8 -o out/dsnet-c --build
      out/dsnet-c/build-host/ee_run out/dsnet-int8 x.npy --litert $(python -c 'import ai_edge_litert,os;print(os.path.dirname(ai_edge_litert.__file__))')/libLiteRt.so
      eecompile harness out/dsnet-int8 -o out/dsnet-android --arch android-arm64 --build
    """
    from eecompile.bundle.io import load_bundle
    from eecompile.errors import HarnessError
    from eecompile.harness.generate import check_harness_dir, generate_harness

    if arch == "android-arm64" and sanitize:
        raise HarnessError("--sanitize is for host builds", hint="drop --sanitize for --arch android-arm64")
    if min_sdk is not None and arch != "android-arm64":
        raise HarnessError("--min-sdk applies to --arch android-arm64", hint="drop --min-sdk")
    check_harness_dir(output, force)
    out = generate_harness(load_bundle(bundle_dir), output, packed=False if per_stage_files else None, force=force)
    click.echo(f"generated {out / 'ee_bundle_gen.c'} and {out / 'ee_bundle_gen.h'}")
    if do_build and arch == "android-arm64":
        from eecompile.android.build import DEFAULT_MIN_SDK, build_android

        res = build_android(out, out / "build-android-arm64", min_sdk or DEFAULT_MIN_SDK)
        for name, path in res.outputs.items():
            click.echo(f"built {path} (arm64-v8a, API {res.min_sdk}; every symbol checked against bionic)")
        for name, probs in res.warnings.items():
            for p in probs:
                click.echo(f"warning: {name}: {p.message}", err=True)
    elif do_build:
        from eecompile.harness.build import build_harness

        res = build_harness(out, arch=arch, sanitize=sanitize)
        click.echo(f"built {res.ee_run}")


@main.command("bundle")
@click.argument("bundle_dir", type=click.Path())
@click.option("--android", "app_dir", required=True, type=click.Path(),
              help="The Android app to put the bundle into (android_demo/ of the eecompile sources, or a copy).")
@click.option("--create", is_flag=True, help="Create the app at the --android directory from eecompile's template "
                                              "first (it must not exist yet, or be empty); a refused bundle leaves "
                                              "nothing there.")
@click.option("--samples", "n_samples", type=click.IntRange(1, 10000), default=64, show_default=True,
              help="Labelled test samples shipped with the app (from the bundle's own samples).")
@click.option("--check", "host_check", is_flag=True,
              help="Also build the app's JNI library for this machine and run it from a JVM on the samples, "
                   "against the Python runtime.")
@click.option("--apk", type=click.Path(), default=None, help="Also build, sign and verify the APK offline, here.")
@click.option("--litert", type=click.Path(), default=None,
              help="libLiteRt.so for arm64-v8a Android, or LiteRT's .aar: put into the APK.")
@handle_errors
def bundle_cmd(bundle_dir, app_dir, create, n_samples, host_check, apk, litert) -> None:
    """Put BUNDLE_DIR into the Android app: models, manifest, samples, Pareto table, generated C.

    Idempotent (only changed files are written); refuses a bundle that fails its checks and a
    directory that is not the app. Then open the app in Android Studio (./gradlew assembleDebug),
    or build the APK here with --apk (not run on a phone here; see the README).

    \b
    Example:
      eecompile bundle out/dsnet-int8 --android android_demo/ --check --apk out/demo.apk
      eecompile bundle out/dsnet-int8 --android out/my-app --create
    """
    from pathlib import Path

    from eecompile.android.app import install_bundle

    if litert and not apk:
        from eecompile.errors import HarnessError

        raise HarnessError("--litert goes into the APK", hint="add --apk OUT.apk")
    res = install_bundle(bundle_dir, app_dir, n_samples, create=create)  # create: all or nothing
    if res.created:
        click.echo(f"created the app at {app_dir} from eecompile's template")
    click.echo(f"{app_dir}: {len(res.written)} files written, {res.unchanged} unchanged, {len(res.removed)} removed; "
               f"{res.n_samples} samples; Pareto table: {'yes' if res.calibrated else 'no (not calibrated)'}")
    if host_check:
        import tempfile

        from eecompile.android.hostcheck import host_check as run_check

        with tempfile.TemporaryDirectory() as tmp:
            hc = run_check(app_dir, bundle_dir, Path(tmp))
        click.echo(f"host check (JNI bridge in a JVM, host libLiteRt.so): {hc.n} samples, class equal "
                   f"{hc.class_equal}, exit equal {hc.exit_equal}, int8 logits equal {hc.logits_equal} to the Python "
                   f"runtime; exits {hc.exit_counts}, mean {hc.mean_us:.1f} us")
        if not hc.ok:
            from eecompile.errors import HarnessError

            raise HarnessError("host check failed: " + "; ".join(hc.problems()),
                               hint="rebuild the app's library for this bundle (eecompile bundle ... --apk); if it "
                                    "persists, report it with the bundle")
    if apk:
        from eecompile.android.apk import build_apk

        r = build_apk(app_dir, apk, Path(litert) if litert else None)
        click.echo(f"built {r.apk} ({r.size_bytes / 1024:.0f} KiB): package {r.package}, native-code "
                   f"{', '.join(r.native_code)}, minSdk {r.min_sdk}, {r.stored_assets} assets stored uncompressed, "
                   f"signature verified (apksigner); not run on a phone here")
        for w in r.warnings:
            click.echo(f"warning: {w}", err=True)


@main.command()
@click.argument("bundle_dir", type=click.Path())
@click.option("--device", "devices", multiple=True, metavar="DEV",
              help="host, adb, adb:SERIAL, adb:all, ssh:USER@HOST[:PORT], qemu-aarch64; repeat for a fleet.")
@click.option("--threads", type=int, default=1, show_default=True, help="XNNPACK threads.")
@click.option("--cores", help="CPU affinity of the runner, a hex mask (e.g. 0xf0: the big cores of a 4+4 phone).")
@click.option("--runs", type=int, default=100, show_default=True, help="Rounds (every exit once) at least.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Rounds before timing.")
@click.option("--min-secs", type=float, default=1.0, show_default=True, help="Time at least this long.")
@click.option("--max-secs", type=float, default=60.0, show_default=True, help="Stop timing after this long.")
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Run the runner this many times (fresh processes) and report the spread.")
@click.option("--energy", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: measure energy where the device can (power rails, battery gauge, RAPL).")
@click.option("--energy-secs", type=float, help="Length of each energy block (default: 2 s; 10 s on a battery gauge).")
@click.option("--power-w", type=float, help="Active power of the device's CPU (W): estimate energy = latency x W "
                                            "where none is measured (labelled estimated).")
@click.option("--data", help="Inputs (NAME[:SPLIT[:N]] or .npy/.npz); default: the bundle's own samples.")
@click.option("--runner", type=click.Path(), help="ee_profile built for the device (a file or a harness build dir).")
@click.option("--litert", type=click.Path(), help="libLiteRt.so for the device.")
@click.option("--ssh-config", type=click.Path(), help="An ssh_config file (identity, known hosts) for ssh devices.")
@click.option("--cleanup", is_flag=True, help="Remove the deployed files from the device afterwards.")
@click.option("--output", "-o", type=click.Path(), help="Also write the profile here (a directory for a fleet).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def profile(bundle_dir, devices, threads, cores, runs, warmup, min_secs, max_secs, repeat, energy, energy_secs,
            power_w, data, runner, litert, ssh_config, cleanup, output, as_json) -> None:
    """Measure every exit of BUNDLE_DIR on devices: latency, memory, energy.

    \b
    The runner (the bundle's C harness) runs on the device; the profile is written into
    BUNDLE_DIR/profiles/<device>.json (+ .png) and calibration reads it.
    \b
    Example:
      eecompile profile out/dsnet-int8 --device host --repeat 5
      eecompile profile out/dsnet-int8 --device ssh:pi@board --power-w 3.5
      eecompile profile out/dsnet-int8 --device adb:all --runner out/c-android --litert libLiteRt.so
    """
    from pathlib import Path

    from eecompile.bundle.io import load_bundle
    from eecompile.errors import DeviceError
    from eecompile.profile.fleet import resolve_devices
    from eecompile.profile.measure import ProfileOptions, check_options
    from eecompile.profile.report import fleet_table, profile_table, summary_lines
    from eecompile.profile.runner import RunSettings

    b = load_bundle(bundle_dir)
    opts = ProfileOptions(settings=RunSettings(threads=threads, cores=cores, runs=runs, warmup=warmup,
                                               min_secs=min_secs, max_secs=max_secs),
                          repeat=repeat, energy=energy, energy_secs=energy_secs, power_w=power_w,
                          runner=Path(runner) if runner else None, litert=Path(litert) if litert else None,
                          ssh_config=ssh_config, cleanup=cleanup)
    check_options(opts)
    if data:
        from eecompile.data.datasets import load_data

        opts.inputs = load_data(data, "test").x
    elif b.manifest.samples is None:
        raise click.UsageError("the bundle ships no samples (exported before schema 3): pass --data")
    devs = resolve_devices(list(devices))
    outcomes = _profile_with_progress(b, devs, opts, output, quiet=as_json)
    done = [o.profile for o in outcomes if o.profile is not None]
    if as_json:
        click.echo(json.dumps(done[0] if len(devs) == 1 and done else done, indent=2))
    else:
        con = _console()
        for prof in done:
            con.print(profile_table(prof))
            for line in summary_lines(prof):
                click.echo("  " + line)
        if len(done) > 1:
            con.print(fleet_table(done))
        for o in outcomes:
            for p in o.paths:
                click.echo(f"wrote {p}")
    failed, hint = [], "profile it again"
    for o in outcomes:
        if o.error is not None:
            failed.append(f"{o.device.spec}: {type(o.error).__name__}: {o.error.message}")
            hint = o.error.hint or hint
        elif not o.profile["complete"]:
            failed.append(f"{o.device.spec}: {o.profile['incomplete_reason']} (the partial profile is kept, "
                          "marked incomplete)")
    if failed:
        if len(devs) == 1 and outcomes[0].error is not None:
            raise outcomes[0].error
        raise DeviceError(f"{len(failed)} of {len(devs)} device(s) not profiled completely: " + "; ".join(failed),
                          hint=hint)


def _profile_with_progress(bundle, devs, opts, output, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from eecompile.profile.fleet import profile_fleet

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=quiet, transient=True) as prog:
        tasks = {d.device_id: prog.add_task(f"{d.device_id}: connect", total=1) for d in devs}

        def progress_for(dev):
            def cb(phase: str, done: int, total: int) -> None:
                prog.update(tasks[dev.device_id], description=f"{dev.device_id}: {phase}", completed=done,
                            total=max(total, 1))
            return cb

        return profile_fleet(bundle, devs, opts, output, progress_for)


@main.command()
@click.argument("bundle_dir", type=click.Path())
@click.option("--data", "-d", required=True, help="Labelled data: NAME:SPLIT[:N] or a .npz with x and y.")
@click.option("--budget", "-b", required=True,
              help="accuracy-drop=X (points), latency-ms=X (mean), p95-latency-ms=X, energy-mj=X (mean); "
                   "combine with commas.")
@click.option("--profile", "profile_path", type=click.Path(),
              help="The device profile to take costs from (default: the bundle's only profile).")
@click.option("--cost", type=click.Choice(["auto", "macs"]), default="auto", show_default=True,
              help="auto: the device profile, else MACs; macs: MACs even when a profile exists.")
@click.option("--policy", type=click.Choice(["auto", *POLICY_NAMES]), default="auto", show_default=True,
              help="auto: the best of every policy, judged on half of the search data.")
@click.option("--exits", default="auto", show_default=True,
              help="auto: search which exits to keep; all: keep every exit; 0,2,3: keep exactly these.")
@click.option("--guarantee", "guarantee_eps", type=float,
              help="Bound the accuracy lost against the final exit on new data (e.g. 0.01), with probability "
                   ">= 1 - delta (Learn-then-Test).")
@click.option("--delta", type=float, help="Risk of the guarantee (default 0.1); only with --guarantee or --cost-guarantee.")
@click.option("--cost-guarantee", is_flag=True, help="Also bound the mean latency/energy on new data by the budget "
                                                     "with probability >= 1 - delta.")
@click.option("--holdout", type=float, default=0.3, show_default=True,
              help="Share of the data held out to report on (the search never sees it).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--margin", "margin_z", type=float, default=2.0, show_default=True,
              help="Meet an accuracy-drop budget with this many standard errors to spare on the search data.")
@click.option("--dry-run", is_flag=True, help="Report, but do not write the rule into the bundle.")
@click.option("--output", "-o", type=click.Path(), help="Also write the report (JSON) here.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def calibrate(bundle_dir, data, budget, profile_path, cost, policy, exits, guarantee_eps, delta, cost_guarantee,
              holdout, seed, margin_z, dry_run, output, as_json) -> None:
    """Choose the exits to keep and the decision rule of BUNDLE_DIR under a budget.

    \b
    Costs come from the bundle's device profile (eecompile profile), else from MACs; every
    figure is reported on held-out data. The rule is written into the bundle (and the harness
    compiles it in: regenerate it with eecompile harness).
    \b
    Example:
      eecompile calibrate out/dsnet-int8 --data fashion-mnist:test --budget accuracy-drop=0.5
      eecompile calibrate out/dsnet-int8 --data fashion-mnist:test --budget latency-ms=0.04 --policy learned
      eecompile calibrate out/dsnet-int8 --data fashion-mnist:test --budget accuracy-drop=1 --guarantee 0.01 --delta 0.1
    """
    from eecompile.bundle.io import load_bundle
    from eecompile.calibrate.budget import parse_budget
    from eecompile.calibrate.calibrate import CalibrateOptions
    from eecompile.calibrate.calibrate import calibrate as do_calibrate
    from eecompile.calibrate.report import calibration_table, summary_lines
    from eecompile.data.datasets import load_data, parse_data_spec

    b = load_bundle(bundle_dir)
    opts = CalibrateOptions(budget=parse_budget(budget), policy=policy, exits=exits, cost=cost, profile=profile_path,
                            guarantee_eps=guarantee_eps, delta=delta, cost_guarantee=cost_guarantee,
                            holdout=holdout, seed=seed, margin_z=margin_z, write=not dry_run)
    parse_data_spec(data, "val")
    ds = load_data(data, "val")
    con = _console()
    with con.status("calibrating", spinner="dots") if not as_json else _nullcontext() as status:
        def progress(msg: str) -> None:
            if status is not None:
                status.update(f"calibrating: {msg}")

        report = do_calibrate(b, ds.x, ds.y, opts, data_name=ds.name, progress=progress)
    if output:
        from eecompile.util import atomic_write_text

        atomic_write_text(output, json.dumps(report, indent=2, default=float))
    if as_json:
        click.echo(json.dumps(report, indent=2, default=float))
        return
    con.print(calibration_table(report))
    for line in summary_lines(report):
        click.echo("  " + line)
    if report.get("written"):
        w = report["written"]
        click.echo(f"wrote the rule into {w['manifest']} (decision {w['decision_hash']}); report {w['report']}, "
                   f"plot {w['plot']}; regenerate the harness: eecompile harness {bundle_dir} -o DIR --force")


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@main.command()
@click.option("--model", default="dsnet-fmnist", show_default=True, type=click.Choice(sorted(ZOO)),
              help="Zoo model to train and ship.")
@click.option("--out", "out_dir", default="demo-out", show_default=True, type=click.Path())
@click.option("--n-test", type=int, help="Use only the first N test samples.")
@click.option("--latency-budget", type=float, default=0.55, show_default=True,
              help="Calibrate (on val) the most accurate rule whose mean latency, from the profile, is <= this x "
                   "the full path's.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def demo(model, out_dir, n_test, latency_budget, as_json) -> None:
    """Train (or load) a zoo model, export tflite-int8, validate, run the test split with early exits.

    \b
    Example:
      eecompile demo
      eecompile demo --model dsnet-digits --out /tmp/demo
    """
    from eecompile.report.demo import run_demo
    from eecompile.report.tables import demo_table, validation_table

    report = run_demo(model, out_dir, n_test=n_test, latency_budget=latency_budget, quiet=as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    con = _console()
    con.print(validation_table(report["validation"]))
    con.print(demo_table(report))
    ee, fe = report["early_exit"], report["final_exit"]
    click.echo(f"final exit : accuracy {100 * fe['accuracy']:.2f}%  mean latency {fe['mean_latency_us']:.1f} us "
               "(C runner, measured)")
    click.echo(f"early exit : accuracy {100 * ee['accuracy']:.2f}%  mean latency {ee['mean_latency_us']:.1f} us "
               f"({report['policy']} calibrated for {report['budget']} on {report['calibrated_on']})")
    o = report["oracle"]
    click.echo(f"latency ratio {report['latency_ratio']:.3f}x (the oracle's, modelled: {o['latency_ratio']:.3f}x), MAC ratio "
               f"{report['mac_ratio']:.3f}x, accuracy gap {report['accuracy_gap_pts']:.2f} pts; C runner and Python "
               f"runtime agree on every class: {ee['c_equals_python']}")
    pr = report["profile"]
    click.echo(f"profile on {pr['device']}: full path p50 {pr['p50_us'][-1]:.1f} us, load {pr['load_ms']:.1f} ms, "
               f"peak memory {pr['vm_hwm_kb']} kB; {pr['file']}")
    for n in report["notes"]:
        click.echo(f"note: {n}")
    an = report["android"]
    if "skipped" in an:
        click.echo(f"android: app at {an['app']}; JNI check and APK skipped: {an['skipped']}")
    else:
        hc, apk = an["host_check"], an["apk"]
        click.echo(f"android: app at {an['app']} ({an['samples']} samples); its JNI bridge in a JVM here: class, exit "
                   f"and int8 logits equal to the Python runtime on {hc['logits_equal']}/{hc['n']} samples; APK "
                   f"{apk['file']} ({apk['size_bytes'] / 1024:.0f} KiB, {', '.join(apk['native_code'])}, signed and "
                   f"verified; without libLiteRt.so: add LiteRT's AAR with eecompile bundle --apk --litert); not run "
                   "on a phone here")
    click.echo(f"export took {report['export_s']:.1f} s, calibration {report['calibrate_s']:.1f} s; bundle "
               f"{report['bundle']}; plot {report['plot']}")


def entry() -> None:
    """The console script: native log lines go to a file unless --verbose (see eecompile.clilog)."""
    from eecompile.clilog import quiet_native_output

    verbose = any(a in ("-v", "--verbose") for a in sys.argv[1:])
    with quiet_native_output(enabled=not verbose):
        main()


if __name__ == "__main__":  # pragma: no cover
    entry()
