"""Contract tests every optimiser runs (like optuna/testing): valid configs, failed tells,
rebuild by replay, declared capabilities, distinct batches, read-only views, clear errors."""

from __future__ import annotations

import pytest

from autopeft import InvalidConfig
from autopeft.optim import OPTIMIZERS, create_optimizer
from autopeft.optim.base import config_key

from .conftest import FAST_OPTIONS, toy_values

NAMES = list(OPTIMIZERS) + ["asha+random", "moasha+tpe"]
OBJECTIVES = [("accuracy", "maximize"), ("params", "minimize")]


def make(name, space, seed=0, **extra):
    base = name.split("+")[-1]
    return create_optimizer(
        name, space, OBJECTIVES, seed=seed, **{**FAST_OPTIONS.get(base, {}), **extra}
    )


def run_history(opt, batches=(3, 3, 2)):
    """Ask in batches; fail one trial, prune one, complete the rest; report for PBT-like."""
    calls = []
    for b in batches:
        suggestions = opt.ask(b)
        calls.append(("ask", b))
        for s in suggestions:
            config = opt.trials[s.id].config
            values = toy_values(config)
            decision = opt.report(s.id, 1, values)
            calls.append(("report", s.id, 1, values))
            if s.id == 1:
                opt.tell(s.id, None, "failed")
                calls.append(("tell", s.id, None, "failed"))
            elif s.id == 2 or decision == "stop":
                opt.tell(s.id, None, "pruned")
                calls.append(("tell", s.id, None, "pruned"))
            else:
                config = opt.trials[s.id].config  # PBT may have changed it
                opt.tell(s.id, toy_values(config))
                calls.append(("tell", s.id, toy_values(config), "complete"))
    return calls


def replay(opt, calls):
    for call in calls:
        if call[0] == "ask":
            opt.ask(call[1])
        elif call[0] == "report":
            opt.report(call[1], call[2], call[3])
        else:
            opt.tell(call[1], call[2], call[3])


@pytest.mark.parametrize("name", NAMES)
def test_ask_returns_valid_configs_and_tell_accepts_failed(name, mixed_space):
    opt = make(name, mixed_space)
    run_history(opt)
    for t in opt.trials:
        assert mixed_space.validate(t.config) == t.config
    states = [t.state for t in opt.trials]
    assert states[1] == "failed" and states[2] == "pruned"
    assert opt.trials[1].values is None
    for s in opt.ask(2):
        assert mixed_space.validate(s.config) == s.config
    assert all(t.state in ("complete", "failed", "pruned", "running") for t in opt.trials)


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_by_replay_gives_the_same_next_suggestion(name, mixed_space):
    a = make(name, mixed_space, seed=7)
    calls = run_history(a)
    b = make(name, mixed_space, seed=7)
    replay(b, calls)
    assert [t.config for t in a.trials] == [t.config for t in b.trials]
    assert [s.config for s in a.ask(2)] == [s.config for s in b.ask(2)]


@pytest.mark.parametrize("name", NAMES)
def test_batch_configs_are_distinct(name, mixed_space):
    opt = make(name, mixed_space)
    run_history(opt, batches=(4, 4))
    batch = opt.ask(5)
    keys = {config_key(s.config) for s in batch}
    assert len(keys) == 5
    assert [s.id for s in batch] == list(range(8, 13))


@pytest.mark.parametrize("name", NAMES)
def test_trials_and_pareto_are_read_only(name, mixed_space):
    opt = make(name, mixed_space)
    run_history(opt)
    t = opt.trials[0]
    t.config["lr"] = -1.0
    assert opt.trials[0].config["lr"] != -1.0
    front = opt.pareto()
    assert front and all(p.state == "complete" for p in front)
    front[0].values["accuracy"] = 99.0
    assert opt.pareto()[0].values["accuracy"] != 99.0


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_named(name, mixed_space):
    with pytest.raises(InvalidConfig, match="no_such_option"):
        make(name, mixed_space, no_such_option=1)


def test_unknown_optimiser_and_prefix_are_named(mixed_space):
    with pytest.raises(InvalidConfig, match="cmaes"):
        create_optimizer("cmaes", mixed_space, OBJECTIVES)
    with pytest.raises(InvalidConfig, match="hyperband"):
        create_optimizer("hyperband+random", mixed_space, OBJECTIVES)
    with pytest.raises(InvalidConfig, match="direction"):
        create_optimizer("random", mixed_space, [("accuracy", "up")])


def test_tell_errors_name_the_problem(mixed_space):
    opt = make("random", mixed_space)
    (s,) = opt.ask()
    with pytest.raises(InvalidConfig, match="params"):
        opt.tell(s.id, {"accuracy": 0.5})
    with pytest.raises(InvalidConfig, match="state"):
        opt.tell(s.id, None, "done")
    with pytest.raises(InvalidConfig, match="needs values"):
        opt.tell(s.id, None, "complete")
    opt.tell(s.id, {"accuracy": 0.5, "params": 10})
    with pytest.raises(InvalidConfig, match="already told"):
        opt.tell(s.id, None, "failed")
    with pytest.raises(InvalidConfig, match="unknown trial id"):
        opt.tell(99, None, "failed")


def test_non_finite_complete_is_recorded_failed_with_a_note(mixed_space):
    opt = make("random", mixed_space)
    (s,) = opt.ask()
    t = opt.tell(s.id, {"accuracy": float("nan"), "params": 1.0})
    assert t.state == "failed" and "non-finite" in t.note


def test_importing_optim_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = (
        "import sys, autopeft.optim, autopeft.optim.pareto; "
        "print([m for m in ('torch', 'botorch', 'optuna', 'gpytorch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_optimiser_declares_its_capabilities(mixed_space):
    from autopeft.optim import optimizer_class
    from autopeft.optim.base import BaseOptimizer, Population

    for name in OPTIMIZERS:
        cls = optimizer_class(name)
        declared = [c for c in cls.__mro__ if "REBUILDS_BY_ADD" in vars(c)]
        assert declared and declared[0] is not BaseOptimizer, name
        assert isinstance(cls.REBUILDS_BY_ADD, bool), name
        population = make(name, mixed_space).population
        assert population is None or isinstance(population, Population), name
    assert make("pbt", mixed_space, population_size=3, perturbation_interval=2).population == (
        Population(3, 2, None)
    )
    assert make("mobo", mixed_space).population is None


def _rebuild_by_add(opt, calls, configs):
    """The scheduler's rebuild of a ``REBUILDS_BY_ADD`` optimiser: each logged ask registers the
    stored config with ``add_trial`` (running); reports and tells are replayed as logged."""
    for call in calls:
        if call[0] == "ask":
            for _ in range(call[1]):
                opt.add_trial(configs[len(opt.trials)], state="running")
        elif call[0] == "report":
            opt.report(call[1], call[2], call[3])
        else:
            opt.tell(call[1], call[2], call[3])


@pytest.mark.parametrize("name", NAMES)
def test_an_optimiser_that_rebuilds_by_add_trial_gives_the_same_next_suggestion(name, mixed_space):
    a = make(name, mixed_space, seed=3)
    if not type(a).REBUILDS_BY_ADD:
        pytest.skip(f"{name} rebuilds by replaying its asks")
    calls = run_history(a)
    b = make(name, mixed_space, seed=3)
    _rebuild_by_add(b, calls, [t.config for t in a.trials])
    assert b.trials == a.trials
    assert [s.config for s in a.ask(2)] == [s.config for s in b.ask(2)]
