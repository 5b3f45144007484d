"""Re-inject the 19 faults of issue #21 that once survived the whole suite, one at a time, and
check that the test written for each now fails (and that every test passes on clean code).

    python scripts/check_survivors.py            # all of them (about a minute)
    python scripts/check_survivors.py adam root  # those whose name contains a word

Each fault is a textual edit of one file under ``src/nnbackend``: the script applies it, runs
the named test with pytest on numpy (a fresh process), and restores the file byte for byte
whatever happens. The exit status is 1 when a fault survives or an edit no longer applies
(the code moved: update the table). Not part of the test suite: it edits the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "nnbackend"
SURV = "tests/test_mutation_survivors.py::"
TRAIN = "tests/test_trainer_arithmetic.py::"


@dataclass(frozen=True)
class Fault:
    name: str
    path: str  # under src/nnbackend
    old: str
    new: str
    test: str  # a pytest node id, or a -k expression after "-k "


FAULTS = [
    Fault(
        "layer_norm third term without the weight",
        "nn/functional.py",
        "- xhat * xp.mean(g * xhat, axis=-1, keepdims=True)",
        "- xhat * xp.mean(gy * xhat, axis=-1, keepdims=True)",
        SURV + "test_layer_norm_input_gradient_uses_the_weight_in_every_term",
    ),
    Fault(
        "soft targets assumed to sum to 1",
        "nn/functional.py",
        "p = p * k.sum(self.t, axis=1, keepdims=True)",
        "p = p",
        SURV + "test_soft_targets_not_summing_to_one_get_the_right_gradient",
    ),
    Fault(
        "label range check disabled on host backends",
        "nn/functional.py",
        "if bad is None and not k.labels_in_range(labels, n_classes):",
        "if False:",
        SURV + "test_out_of_range_labels_raise_label_error_on_host_backends",
    ),
    Fault(
        "bad-label message off by one",
        "nn/functional.py",
        "wrong = found[(found < 0) | (found >= n_classes)]",
        "wrong = found[(found < 0) | (found > n_classes)]",
        SURV + "test_out_of_range_labels_raise_label_error_on_host_backends",
    ),
    Fault(
        "the same shuffle every epoch",
        "train/trainer.py",
        "perm = self._permutation(run.generator, run.n, run.x, run.xp) if run.generator else None",
        "perm = self._permutation(nb_random.Generator(run.seed), run.n, run.x, run.xp)"
        " if run.generator else None",
        TRAIN + "test_each_epoch_draws_a_new_permutation_reproducible_with_a_seed",
    ),
    Fault(
        "partial batch weighted as a full one",
        "train/trainer.py",
        "run.whole.add(lv, rows, correct, count)",
        "run.whole.add(lv, run.batch_size, correct, count)",
        TRAIN + "test_mse_epoch_loss_weights_the_partial_batch_by_its_rows",
    ),
    Fault(
        "accuracy ignoring per-row predictions",
        "train/metrics.py",
        "(t > 0.5)), math.prod(int(d) for d in t.shape)",
        "(t > 0.5)), int(t.shape[0])",
        TRAIN + "test_sigmoid_accuracy_counts_every_output_and_thresholds_probabilities",
    ),
    Fault(
        "sigmoid accuracy thresholding logits at 0.5",
        "train/metrics.py",
        "xp.count_nonzero((y > 0) == (t > 0.5))",
        "xp.count_nonzero((y > 0.5) == (t > 0.5))",
        TRAIN + "test_sigmoid_accuracy_counts_every_output_and_thresholds_probabilities",
    ),
    Fault(
        "a second Ctrl-C not aborting",
        "train/interrupt.py",
        "            raise KeyboardInterrupt\n        self.requested = True",
        "            return\n        self.requested = True",
        TRAIN + "test_a_second_ctrl_c_aborts_the_step_in_progress",
    ),
    Fault(
        "newer format version accepted",
        "io/_metadata.py",
        "if version > FORMAT_VERSION:",
        "if False:",
        SURV + "test_a_newer_format_version_is_refused_with_upgrade_advice",
    ),
    Fault(
        "metadata-vs-array shape check removed",
        "io/_metadata.py",
        "if tuple(shape) != tuple(want_shape):",
        "if False:",
        SURV + "test_an_array_whose_shape_differs_from_the_metadata_is_refused",
    ),
    Fault(
        "load keeping stale .grad",
        "io/__init__.py",
        "            param.grad = None",
        "            pass",
        SURV + "test_load_drops_stale_gradients",
    ),
    Fault(
        "stray optimizer entries accepted",
        "io/__init__.py",
        "    if stray:",
        "    if False:",
        SURV + "test_stray_optimizer_entries_are_refused",
    ),
    Fault(
        "flag parsing case-sensitive",
        "config.py",
        "raw = value.strip().lower()",
        "raw = value.strip()",
        SURV + "test_flags_are_case_insensitive",
    ),
    Fault(
        "resolve(backend=other) keeping the using() device",
        "config.py",
        "            device = None  # a device belongs to the backend it was chosen for",
        "            pass",
        SURV + "test_resolve_with_another_backend_drops_the_using_blocks_device",
    ),
    Fault(
        "registry generation not bumped on register",
        "registry.py",
        "        generation += 1\n        _on_change()\n    return backend",
        "        _on_change()\n    return backend",
        SURV + "test_replacing_a_backend_is_seen_by_the_next_namespace_call",
    ),
    Fault(
        "arange ignoring a float step",
        "namespace.py",
        "float in (type(start), type(stop), type(step))",
        "float in (type(start), type(stop))",
        SURV + "test_arange_with_a_float_step_makes_default_float_values",
    ),
    Fault(
        "Adam using the global step count",
        "optim.py",
        't = st["step"] = st.get("step", 0) + 1\n        step_size',
        't = st["step"] = self.steps\n        step_size',
        SURV + "test_adam_counts_steps_per_parameter",
    ),
    Fault(
        "root gradient cleared after backward",
        "autograd/function.py",
        "if single:  # the output read above: no second dereference\n"
        "                if out is not None and not out._retain and out is not root:",
        "if single:  # the output read above: no second dereference\n"
        "                if out is not None and not out._retain:",
        SURV + "test_the_root_keeps_its_gradient_after_backward",
    ),
]


def _pytest(node: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NNBACKEND_TEST_BACKENDS="numpy")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o",
           "addopts=--import-mode=importlib", node]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True).returncode


def main(words: list[str]) -> int:
    chosen = [f for f in FAULTS if not words or any(w in f.name for w in words)]
    bad = 0
    for fault in sorted({f.test for f in chosen}):
        if _pytest(fault) != 0:
            print(f"FAIL on clean code: {fault}")
            bad += 1
    for fault in chosen:
        path = SRC / fault.path
        original = path.read_bytes()
        text = original.decode()
        if text.count(fault.old) != 1:
            print(f"MOVED   {fault.name}: the edit matches {text.count(fault.old)} times")
            bad += 1
            continue
        try:
            path.write_text(text.replace(fault.old, fault.new))
            rc = _pytest(fault.test)
        finally:
            path.write_bytes(original)
        verdict = "killed " if rc == 1 else "SURVIVED" if rc == 0 else f"ERROR {rc}"
        bad += rc != 1
        print(f"{verdict} {fault.name}  ({fault.path})")
    print(f"{len(chosen)} faults, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
