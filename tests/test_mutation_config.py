"""CI's smoke test of the mutation-testing set-up (``nox -s mutation`` itself takes hours on
two cores and never runs in CI): the ``[tool.mutmut]`` table names the modules of issue #21
and nothing that does not exist, the accepted-survivors file parses, the report script reads
mutmut's output, and every fault that ``scripts/check_survivors.py`` re-injects still applies
to the code (a fault whose code moved would make that check silently weaker)."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = [  # issue 21: autograd/, nn/, optim, precision, io, config, namespace, registry, Trainer
    "src/nnbackend/autograd/function.py",
    "src/nnbackend/autograd/tensor.py",
    "src/nnbackend/nn/functional.py",
    "src/nnbackend/nn/layers.py",
    "src/nnbackend/optim.py",
    "src/nnbackend/precision.py",
    "src/nnbackend/io/__init__.py",
    "src/nnbackend/io/_npz.py",
    "src/nnbackend/config.py",
    "src/nnbackend/namespace.py",
    "src/nnbackend/registry.py",
    "src/nnbackend/train/trainer.py",
    "src/nnbackend/train/metrics.py",
    "src/nnbackend/train/interrupt.py",
]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_nnbackend_script_{name}", ROOT / "scripts" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]


def test_mutmut_config_covers_the_core_and_names_only_real_paths() -> None:
    config = _config()
    assert config["source_paths"] == ["src"]
    patterns = config["only_mutate"]
    for path in CORE:
        assert any(fnmatch.fnmatch(path, p) for p in patterns), f"{path} is not mutated"
    for pattern in patterns:
        assert pattern.endswith((".py", "*")), pattern  # mutmut ignores other patterns
        assert list(ROOT.glob(pattern)), f"{pattern} matches no file"
    for path in config["also_copy"]:
        assert (ROOT / path).exists(), path
    assert config["pytest_add_cli_args_test_selection"] == ["tests"]


def test_nox_has_a_mutation_session_that_runs_mutmut_and_the_report() -> None:
    tree = ast.parse((ROOT / "noxfile.py").read_text("utf-8"))
    sessions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "mutation" in sessions
    source = ast.unparse(sessions["mutation"])
    assert "'mutmut', 'run'" in source and "mutation_report.py" in source
    assert "mutation" not in ast.unparse(tree).split("nox.options.sessions")[1].split("\n")[0]


def test_accepted_survivors_parse_with_one_reason_each(tmp_path: Path) -> None:
    report = _script("mutation_report")
    accepted = report.read_accepted()
    patterns = _config()["only_mutate"]
    for name, reason in accepted.items():
        path = "src/" + report.module_of(name).replace(".", "/")
        assert any(fnmatch.fnmatch(p, pat) for p in (path + ".py", path + "/__init__.py")
                   for pat in patterns), f"{name}: its module is not mutated"  # fmt: skip
        assert len(reason) >= 10, f"{name}: say why it is equivalent"
    bad = tmp_path / "accepted.txt"
    for line in ["nnbackend.registry.x_get__mutmut_1", "nnbackend.registry.x_get__mutmut_1  #",
                 "not a name  # reason"]:  # fmt: skip
        bad.write_text(line + "\n")
        with pytest.raises(ValueError):
            report.read_accepted(bad)
    bad.write_text("a.x_f__mutmut_1  # twice\na.x_f__mutmut_1  # twice\n")
    with pytest.raises(ValueError, match="twice"):
        report.read_accepted(bad)


def test_the_report_scores_mutmut_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = _script("mutation_report")
    results = tmp_path / "results.txt"
    results.write_text(
        "    nnbackend.registry.x_get__mutmut_1: killed\n"
        "    nnbackend.registry.x_get__mutmut_2: survived\n"
        "    nnbackend.registry.x_get__mutmut_3: timeout\n"
        "    nnbackend.optim.xǁAdamǁ_update__mutmut_4: killed\n"
        "    nnbackend.optim.xǁAdamǁ_update__mutmut_5: not checked\n"
    )
    none = tmp_path / "none.txt"
    none.write_text("# nothing accepted\n")
    args = ["--results", str(results), "--accepted", str(none)]
    assert report.main(args) == 0
    out = capsys.readouterr().out
    assert "nnbackend.registry" in out and "66.7%" in out
    assert "nnbackend.optim" in out and "100.0%" in out
    assert "nnbackend.registry.x_get__mutmut_2" in out
    assert report.main([*args, "--fail-under", "90"]) == 1
    capsys.readouterr()
    one = tmp_path / "one.txt"
    one.write_text("nnbackend.registry.x_get__mutmut_2  # equivalent for this test\n")
    assert (
        report.main(["--results", str(results), "--accepted", str(one), "--fail-under", "90"]) == 0
    )
    out = capsys.readouterr().out
    assert "want a test" not in out and "66.7%" not in out


def test_every_reinjected_fault_still_applies_to_the_code() -> None:
    faults = _script("check_survivors").FAULTS
    assert len(faults) == 19
    for fault in faults:
        text = (ROOT / "src" / "nnbackend" / fault.path).read_text("utf-8")
        assert text.count(fault.old) == 1, f"{fault.name}: the code moved; update the table"
        test_file, _, test_name = fault.test.partition("::")
        assert f"def {test_name}(" in (ROOT / test_file).read_text("utf-8"), fault.test


def test_a_mutant_no_test_covers_counts_as_a_survivor(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = _script("mutation_report")
    results = tmp_path / "results.txt"
    results.write_text(
        "    nnbackend.config.x_f__mutmut_1: killed\n    nnbackend.config.x_f__mutmut_2: no tests\n"
    )
    none = tmp_path / "none.txt"
    none.write_text("")
    assert report.main(["--results", str(results), "--accepted", str(none)]) == 0
    out = capsys.readouterr().out
    assert "50.0%" in out and "nnbackend.config.x_f__mutmut_2" in out


def test_the_one_module_runner_narrows_only_what_is_mutated_and_run() -> None:
    runner = _script("mutation_module")
    text = runner.scratch_pyproject(["src/nnbackend/config.py"], ["tests/test_config.py"])
    scratch = tomllib.loads(text)
    full = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert scratch["tool"]["mutmut"] == {
        **_config(),
        "only_mutate": ["src/nnbackend/config.py"],
        "pytest_add_cli_args_test_selection": ["tests/test_config.py"],
    }
    assert scratch["tool"]["pytest"] == full["tool"]["pytest"]
    listing = "\n".join(
        [
            "    a.x_f__mutmut_1: survived",
            "    a.x_f__mutmut_2: killed",
            "    a.x_g__mutmut_3: no tests",
        ]
    )
    assert runner.RETESTED.findall(listing) == ["a.x_f__mutmut_1", "a.x_g__mutmut_3"]


def test_the_runner_passes_pytest_options_a_timeout_and_one_thread() -> None:
    runner = _script("mutation_module")
    tests = ["tests/test_nn.py", "--deselect=tests/test_nn.py::test_slow"]
    scratch = tomllib.loads(runner.scratch_pyproject(["src/nnbackend/nn/*"], tests, 2.0))
    assert scratch["tool"]["mutmut"]["pytest_add_cli_args_test_selection"] == tests
    assert scratch["tool"]["mutmut"]["timeout_multiplier"] == 2.0
    plain = tomllib.loads(runner.scratch_pyproject(["src/nnbackend/nn/*"], tests))
    assert "timeout_multiplier" not in plain["tool"]["mutmut"]
    env = runner.mutmut_environment({"NNBACKEND": "torch", "OMP_NUM_THREADS": "8", "HOME": "/h"})
    assert env == {
        "HOME": "/h",
        "NNBACKEND_TEST_BACKENDS": "numpy,array_api_strict",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def test_a_sample_is_reproducible_leaves_out_what_ran_and_takes_all_of_a_small_pool(
    tmp_path: Path,
) -> None:
    runner = _script("mutation_module")
    names = [f"nnbackend.config.x_f__mutmut_{i}" for i in range(1, 41)]
    first = runner.draw_sample(names, 10, seed=3, done=set())
    assert first == runner.draw_sample(list(reversed(names)), 10, seed=3, done=set())
    assert len(first) == 10 and set(first) <= set(names) and first == sorted(first)
    assert first != runner.draw_sample(names, 10, seed=4, done=set())
    rest = runner.draw_sample(names, 100, seed=3, done=set(first))
    assert sorted(rest + first) == sorted(names)
    meta = tmp_path / "mutants" / "src" / "nnbackend" / "config.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"exit_code_by_key": {"b.x_g__mutmut_2": null, "a.x_f__mutmut_1": 1}}')
    assert runner.generated_mutants(tmp_path) == ["a.x_f__mutmut_1", "b.x_g__mutmut_2"]


def test_a_partly_run_module_reports_its_sample_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = _script("mutation_report")
    low, high = report.wilson(95, 100)
    assert 88.7 < low < 88.9 and 97.8 < high < 97.9  # the textbook 95% Wilson interval
    assert report.wilson(0, 0) == (0.0, 100.0)
    lines = [f"    nnbackend.config.x_f__mutmut_{i}: killed" for i in range(1, 10)]
    lines += ["    nnbackend.config.x_f__mutmut_10: survived"]
    lines += ["    nnbackend.config.x_f__mutmut_11: not checked"]
    results = tmp_path / "results.txt"
    results.write_text("\n".join(lines) + "\n")
    none = tmp_path / "none.txt"
    none.write_text("")
    assert report.main(["--results", str(results), "--accepted", str(none)]) == 0
    out = capsys.readouterr().out
    assert "90.0% (sample of 10: 95% interval 59.6-98.2%)" in out
