"""``kubenas run``: an Experiment manifest carried to an exported best trial on one machine.

The runner is the local backend's shell around the pure planner: every tick it observes
the trial processes (exit, deadline, a scrape of ``/metrics``), hands the Trials to
``plan.plan`` with the time and a Suggester synced from them, and carries out exactly
the actions it gets back. It decides nothing itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from kubenas import api, measurejob, objective, plan, search, workload
from kubenas import results as trial_results
from kubenas.local import report
from kubenas.local.files import read_regular_file
from kubenas.local.live import RunningTrial, Snapshot, View, make_view
from kubenas.local.manifest import ManifestError, load_experiment, same_search
from kubenas.local.processes import (
    GPU_VARIABLE,
    GpuAllocator,
    PortAllocator,
    RankedTrial,
    TrialProcess,
    end_orphans,
    find_run_processes,
    local_argv,
    rank_key,
    thread_environment,
    threads_per_trial,
    visible_gpus,
)
from kubenas.local.results import (
    BEST_DIR,
    RunDirectory,
    RunLockedError,
    read_architecture,
    trial_record,
)
from kubenas.local.scrape import TrialScraper
from kubenas.local.summary import best_document, print_summary
from kubenas.metrics import TrialValues

TICK_SECONDS = 0.5
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_BYTES = 4096
EXIT_INTERRUPTED = 130
RUN_DIR_ENV = "KUBENAS_LOCAL_RUN"


class LocalRunner:
    """Runs one Experiment's trials as local processes, as the planner directs.

    Args:
        experiment: the Experiment (its spec as it should run, e.g. with --parallel applied).
        run_dir: its results directory (locked by the caller).
        view: where progress goes.
    """

    def __init__(self, experiment: api.Experiment, run_dir: RunDirectory, view: View) -> None:
        self.run_dir = run_dir
        self.view = view
        self.spec = experiment.spec
        # No generation: the planner then re-evaluates a finished run on every resume, so raising
        # maxTrials (or maxFailedTrials, maxDuration) in the manifest continues it.
        meta = experiment.metadata.model_copy(update={"uid": run_dir.uid(), "generation": None})
        self.experiment = experiment.model_copy(update={"metadata": meta})
        self.name = meta.name
        self.metric = objective.curve_metric(self.spec) or "objective"
        self.stop_early = objective.stop_early_metrics(self.spec.objective)
        self.trials: dict[str, api.Trial] = {}
        self.processes: dict[str, TrialProcess | RankedTrial] = {}
        self.rank_ports: dict[str, list[int]] = {}  # a multi-process trial's ports besides rank 0's metrics port
        self.measuring: dict[str, TrialProcess] = {}  # latency measurements after the trial, by trial
        self.scrapers: dict[str, TrialScraper] = {}
        self.live: dict[str, RunningTrial] = {}
        self.ports = PortAllocator()
        self.gpus = GpuAllocator(visible_gpus(os.environ))
        self.gpu_of: dict[str, str] = {}
        self.status = run_dir.load_status() or api.ExperimentStatus()
        self.suggester = search.Suggester(self.spec)
        self.threads = threads_per_trial(self.spec.budget.parallel_trials)
        self.interrupted = False
        self._best_cache: tuple[int, api.TrialSummary | None, int] | None = None
        self._template_env = self._container_env()

    # ------------------------------------------------------------------ setup

    def _container(self) -> dict[str, Any]:
        return trial_container(self.spec)

    def _container_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self._container().get("env") or []:
            if isinstance(item, dict) and "value" in item and "name" in item:
                env[str(item["name"])] = str(item["value"])
            elif isinstance(item, dict) and "name" in item:
                self.view.message(f"note: env {item['name']} uses valueFrom, which has no local meaning; left unset")
        return env

    def recover(self) -> int:
        """Rebuild the state of an earlier run of this directory; returns the number of finished trials.

        Trial processes the earlier runner left behind are ended; trials that were running
        are run again under the same name (the budget counts them once); finished trials
        missing from trials.jsonl (a crash between the two writes) are appended.
        """
        records = self.run_dir.processes.load()
        ended = end_orphans(records.values())
        strays = end_orphans(find_run_processes(RUN_DIR_ENV, str(self.run_dir.root.resolve())))
        for record in [*ended, *strays]:
            self.view.message(f"ended trial process {record.pid} left running by the interrupted run ({record.trial})")
        self.run_dir.processes.save([])
        logged = {str(r.get("name")) for r in self.run_dir.finished_records()}
        for trial in self.run_dir.load_trials():
            if not trial.phase.is_finished:
                trial = self._finished_while_away(trial) or self._reset(trial)
                self.run_dir.save_trial(trial)
            if trial.phase.is_finished and trial.name not in logged:
                self.run_dir.append_finished(trial_record(trial, self._value(trial)))
            self.trials[trial.name] = trial
        return sum(1 for t in self.trials.values() if t.phase.is_finished)

    def _finished_while_away(self, trial: api.Trial) -> api.Trial | None:
        """The trial as finished, when it wrote a valid result before or after the runner died; else None.

        Its exit code was never observed: the result (the trial's last act) is taken as its word.
        """
        path = self.run_dir.termination_log(trial.name)
        text = _read_result(path)
        if not text or not trial_results.parse_termination_message(text).ok:
            return None  # no result, or one torn by a kill mid-write: not a result, the trial runs again
        judged_by = plan.result_objective(self.spec, trial)
        outcome = trial_results.classify_finished_trial(judged_by, exit_code=0, result_text=text)
        status = trial.status.model_copy(
            update={
                "phase": outcome.phase,
                "reason": outcome.reason,
                "message": f"{outcome.message} (finished while the runner was stopped; exit code not seen)"[:1024],
                "metrics": dict(outcome.metrics),
                "noisy_metrics": list(outcome.noisy_metrics),
                "exit_code": None,
                "completion_time": _modified(path),
            }
        )
        self.view.message(f"{trial.name} finished while the runner was stopped: its result is kept")
        return trial.model_copy(update={"status": status})

    def _reset(self, trial: api.Trial) -> api.Trial:
        """The trial runs again, from its checkpoint if it saved one: its curve so far is kept and continues."""
        self.run_dir.reset_trial_files(trial.name)
        old = trial.status
        status = api.TrialStatus(
            phase=api.TrialPhase.PENDING,
            reason=api.TrialReason.INTERRUPTED,
            message="the runner stopped while this trial ran; it runs again on resume, from its checkpoint if any",
            curve=old.curve,
            step=old.step,
            final_step=old.final_step,
            rung=old.rung,
            reported=old.reported,
        )
        return trial.model_copy(update={"status": status})

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until the planner completes the experiment or the user interrupts; returns the exit code."""
        finished = sum(1 for t in self.trials.values() if t.phase.is_finished)
        self.view.start(self.name, plan.planned_trials(self.spec), finished)
        previous = _install_interrupt_handler(self)
        try:
            self._loop()
        finally:
            if self.processes or self.measuring:
                self._interrupt_running()
            self.view.stop()
            _restore_interrupt_handler(previous)
        self._write_outputs()
        if self.interrupted:
            return EXIT_INTERRUPTED
        return 0 if self.status.phase == api.ExperimentPhase.SUCCEEDED else 1

    def _loop(self) -> None:
        while not self.interrupted:
            self._observe()
            if self.interrupted:
                break
            self._plan_and_act()
            self._start_pending()
            self.view.update(self._snapshot())
            if self.status.phase.is_finished and not self.processes and not self.measuring:
                return
            if self.spec.suspend and not self.processes:
                # On a cluster a suspended experiment waits for an edit; here nobody can edit it.
                self.view.message("spec.suspend is true: no new trials start; set it to false and --resume")
                return
            time.sleep(TICK_SECONDS)

    def _observe(self) -> None:
        deadline = self.spec.trial_template.active_deadline_seconds
        for name, proc in list(self.processes.items()):
            code = proc.poll()
            if code is not None:
                proc.reap_group()
                self._drain(name)
                self._finish(name, code)
            elif deadline is not None and proc.elapsed > deadline:
                code = proc.end(STOP_GRACE_SECONDS)
                self._drain(name)
                self._finish(name, code, backend_reason=api.TrialReason.DEADLINE_EXCEEDED)
        for name, scraper in list(self.scrapers.items()):
            self._record_samples(name, scraper)
        for name, proc in list(self.measuring.items()):
            code = proc.poll()
            if code is None and proc.elapsed > measurejob.DEADLINE_SECONDS:
                code = proc.end(STOP_GRACE_SECONDS)
            if code is not None:
                proc.reap_group()
                self._measured(name)

    def _drain(self, name: str) -> None:
        """Stop scraping a trial that ended, keeping what was scraped until then."""
        scraper = self.scrapers.pop(name, None)
        if scraper is not None:
            scraper.stop()
            self._record_samples(name, scraper)

    def _record_samples(self, name: str, scraper: TrialScraper) -> None:
        for sample in scraper.drain():
            self._record_sample(name, sample)

    def _record_sample(self, name: str, sample: TrialValues) -> None:
        live = self.live[name]
        live.metrics.update(sample.metrics)
        if sample.step is None:
            return
        live.step = sample.step
        trial = self.trials[name]
        status = trial_results.with_sample(
            trial.status, sample.step, sample.metrics, self.metric, self.stop_early, sample.final_step
        )
        if status is not trial.status:
            self._save(trial.model_copy(update={"status": status}))

    def _plan_and_act(self) -> None:
        trials = sorted(self.trials.values(), key=lambda t: t.spec.index)
        experiment = self.experiment.model_copy(update={"status": self.status})
        result = plan.plan(experiment, trials, datetime.now(UTC), self.suggester, measure_cost=True)
        status = result.status
        for action in result.actions:
            if isinstance(action, plan.CreateTrial):
                self._create(action)
            elif isinstance(action, plan.StopTrial):
                self._stop(action)
            elif isinstance(action, plan.PromoteTrial):
                trial = self.trials[action.name]
                self._save(trial.model_copy(update={"status": trial.status.model_copy(update={"rung": action.rung})}))
            elif isinstance(action, plan.CompleteExperiment):
                self.view.message(f"experiment {action.phase}: {action.reason}: {action.message}")
            elif isinstance(action, plan.MeasureCost):
                self._measure(action)
            elif isinstance(action, plan.ExportBest):
                # best.json carries the front of the plan being applied, not the status it replaces.
                status = status.model_copy(update={"export": self._export(action.trial, status.pareto_front)})
        if status != self.status:
            self.status = status
            self.run_dir.save_status(self.status)

    # ------------------------------------------------------------------ actions

    def _create(self, action: plan.CreateTrial) -> None:
        parameters = workload.trial_parameters(
            action.parameters, action.supernet, lambda name: str(self.run_dir.output_dir(name).resolve())
        )
        raw = workload.build_trial(self.experiment, action.name, action.index, parameters)
        trial = api.Trial.model_validate(raw)
        trial.metadata.creation_timestamp = datetime.now(UTC)
        self._save(trial)
        self._launch(trial)

    def _start_pending(self) -> None:
        """Start trials the planner created that have no process: those an interrupted run left."""
        room = self.spec.budget.parallel_trials - len(self.processes)
        for trial in sorted(self.trials.values(), key=lambda t: t.spec.index):
            if room <= 0 or self.status.phase.is_finished:
                return
            if trial.phase == api.TrialPhase.PENDING and trial.name not in self.processes:
                self._launch(trial)
                room -= 1

    def _launch(self, trial: api.Trial) -> None:
        name = trial.name
        port = self.ports.acquire()
        container = self._container()
        params = trial.spec.parameters
        argv = local_argv(
            workload.substitute_args(container.get("command") or [], params),
            workload.substitute_args(container.get("args") or [], params),
        )
        output = self.run_dir.output_dir(name)
        output.mkdir(parents=True, exist_ok=True)
        parameters_file = self.run_dir.parameters_file(name)
        parameters_file.write_text(workload.parameters_json(params), encoding="utf-8")
        gpu = self.gpus.acquire()
        env = {
            **os.environ,
            **thread_environment(self.threads),
            **({GPU_VARIABLE: gpu} if gpu is not None else {}),
            "PYTHONUNBUFFERED": "1",
            **self._template_env,
            **workload.trial_environment(self.name, name, params, port),
            workload.PARAMETERS_FILE_ENV: str(parameters_file),
            workload.TERMINATION_LOG_ENV: str(self.run_dir.termination_log(name)),
            workload.OUTPUT_DIR_ENV: str(output),
            workload.CHECKPOINT_DIR_ENV: str(self.run_dir.checkpoint_dir(name)),
            "KUBENAS_METRICS_ADDRESS": "127.0.0.1",
            RUN_DIR_ENV: str(self.run_dir.root.resolve()),
        }
        now = datetime.now(UTC)
        try:
            proc = self._start(name, argv, env, port)
        except (OSError, ValueError) as exc:
            self.ports.release(port)
            self.gpus.release(gpu)
            message = f"cannot start {argv[0]!r}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            outcome_status = api.TrialStatus(
                phase=api.TrialPhase.FAILED,
                reason=api.TrialReason.EXIT_CODE,
                message=message[:1024],
                start_time=now,
                completion_time=now,
            )
            self._record_finished(trial.model_copy(update={"status": outcome_status}))
            return
        if gpu is not None:
            self.gpu_of[name] = gpu
        self.processes[name] = proc
        self.scrapers[name] = TrialScraper(port, self.spec.metrics.path)
        self.live[name] = RunningTrial(name=name, parameters=params, started=time.monotonic())
        # A resumed trial keeps its curve: its steps continue after its checkpoint's.
        running = {"phase": api.TrialPhase.RUNNING, "reason": None, "message": None, "start_time": now}
        self._save(trial.model_copy(update={"status": trial.status.model_copy(update=running)}))
        self.view.trial_started(name, params)

    def _start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> TrialProcess | RankedTrial:
        """Start the trial: one process, or with ``replicas`` N, N processes with the environment each pod
        of an Indexed Job gets (MASTER_ADDR 127.0.0.1, a free MASTER_PORT); each is registered as it starts.

        Raises:
            OSError, ValueError: a process could not start (those already started are ended).
        """
        replicas = self.spec.trial_template.replicas
        if replicas == 1:
            proc = TrialProcess.start(name, argv, env, Path.cwd(), self.run_dir.log_path(name), port)
            self.run_dir.processes.add(proc.record)
            return proc
        nproc = workload.processes_per_pod(self._container())
        extra = self.rank_ports[name] = [self.ports.acquire() for _ in range(replicas)]
        master_port, ports = extra[0], [port, *extra[1:]]  # each rank's own metrics port: only rank 0 serves
        ranks: list[TrialProcess] = []
        try:
            for rank in range(replicas):
                rank_env = {
                    **env,
                    **thread_environment(max(1, self.threads // replicas)),
                    **workload.distributed_environment(replicas, nproc, "127.0.0.1", master_port, rank),
                    workload.METRICS_PORT_ENV: str(ports[rank]),
                    workload.TERMINATION_LOG_ENV: str(self.run_dir.termination_log(name, rank)),
                }
                log = self.run_dir.log_path(name, rank)
                ranks.append(TrialProcess.start(rank_key(name, rank), argv, rank_env, Path.cwd(), log, ports[rank]))
                self.run_dir.processes.add(ranks[-1].record)
        except (OSError, ValueError):
            for started in ranks:
                started.end(0)
                self.run_dir.processes.remove(started.record.trial)
            for extra_port in self.rank_ports.pop(name):
                self.ports.release(extra_port)
            raise
        return RankedTrial(ranks)

    def _measure(self, action: plan.MeasureCost) -> None:
        """Start measuring a succeeded trial's latency again from its saved model (one at a time per trial)."""
        if action.name in self.measuring:
            return
        result = self.run_dir.measurement_log(action.name)
        result.unlink(missing_ok=True)
        argv = local_argv(list(measurejob.COMMAND), ["--model", str(self.run_dir.output_dir(action.name))])
        env = {
            **os.environ,
            **thread_environment(1),
            "PYTHONUNBUFFERED": "1",
            workload.TERMINATION_LOG_ENV: str(result),
            RUN_DIR_ENV: str(self.run_dir.root.resolve()),
        }
        key = measurement_key(action.name)
        try:
            proc = TrialProcess.start(key, argv, env, Path.cwd(), self.run_dir.log_path(action.name), 0)
        except (OSError, ValueError) as exc:
            self.view.message(f"{action.name}: cannot measure latency again: {exc}")
            self._measured(action.name)
            return
        self.run_dir.processes.add(proc.record)
        self.measuring[action.name] = proc
        self.view.message(f"{action.name}: measuring latency again (attempt {action.attempt})")

    def _measured(self, name: str) -> None:
        """Record a finished measurement (a failed one counts as an attempt) in the trial's status."""
        self.measuring.pop(name, None)
        self.run_dir.processes.remove(measurement_key(name))
        trial = self.trials[name]
        result = _read_result(self.run_dir.measurement_log(name))
        status = trial_results.measured_status(self.spec.cost_measurement, trial, result)
        measured = trial.model_copy(update={"status": status})
        self._save(measured)
        self._best_cache = None
        self.run_dir.append_finished(trial_record(measured, self._value(measured)))
        latency = status.metrics.get("latency_ms")
        noisy = " (still noisy)" if "latency_ms" in status.noisy_metrics else ""
        self.view.message(f"{name}: latency_ms measured again: {latency:.4g} ms{noisy}" if latency is not None
                          else f"{name}: the latency measurement gave no result (see its log.txt)")

    def _stop(self, action: plan.StopTrial) -> None:
        trial = self.trials.get(action.name)
        if trial is None or trial.phase.is_finished:
            return
        proc = self.processes.get(action.name)
        code = proc.end(STOP_GRACE_SECONDS) if proc is not None else None
        self._drain(action.name)
        live = self.live.get(action.name)
        # The planner stops with EarlyStopped or ExperimentFinished only.
        early = action.reason == api.TrialReason.EARLY_STOPPED
        phase = api.TrialPhase.EARLY_STOPPED if early else api.TrialPhase.STOPPED
        status = trial.status.model_copy(
            update={
                "phase": phase,
                "reason": action.reason,
                "message": (action.message or str(action.reason))[:1024],
                # The last values seen: not a result (only Succeeded trials have one), but worth keeping.
                "metrics": dict(live.metrics) if live else {},
                "exit_code": code,
                "completion_time": datetime.now(UTC),
            }
        )
        self._record_finished(trial.model_copy(update={"status": status}))

    def _finish(self, name: str, exit_code: int, backend_reason: api.TrialReason | None = None) -> None:
        trial = self.trials[name]
        proc = self.processes.get(name)
        # A multi-process trial that a rank failed: that rank's result file and log say why.
        rank = proc.failed_rank if isinstance(proc, RankedTrial) and backend_reason is None else None
        outcome = trial_results.classify_finished_trial(
            plan.result_objective(self.spec, trial),
            exit_code=exit_code,
            result_text=_read_result(self.run_dir.termination_log(name, rank or 0)),
            backend_reason=backend_reason,
            log_tail=_log_tail(self.run_dir.log_path(name, rank or 0)) if exit_code != 0 else None,
            rank=rank,
        )
        status = trial.status.model_copy(
            update={
                "phase": outcome.phase,
                "reason": outcome.reason,
                "message": outcome.message[:1024],
                "metrics": dict(outcome.metrics),
                "noisy_metrics": list(outcome.noisy_metrics),
                "exit_code": exit_code,
                "completion_time": datetime.now(UTC),
            }
        )
        self._record_finished(trial.model_copy(update={"status": status}))

    def _record_finished(self, trial: api.Trial) -> None:
        self._forget_process(trial.name)
        self._save(trial)
        value = self._value(trial)
        self.run_dir.append_finished(trial_record(trial, value))
        self.view.trial_finished(trial, value, self._snapshot())

    def _export(self, best: api.TrialSummary, front: list[api.TrialSummary] | None = None) -> api.ExportStatus:
        """best.json (with ``front``, else the status's) and the best trial's artifacts (in best/)."""
        artifacts = self.run_dir.output_dir(best.name)
        skipped = self.run_dir.write_best(self._best_document(best, front), artifacts)
        if skipped:
            shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
            self.view.message(f"note: best/ leaves out {len(skipped)} item(s) of {best.name}'s output: {shown}")
        has_artifacts = artifacts.is_dir() and any(artifacts.iterdir())
        return api.ExportStatus(artifact=str(self.run_dir.root / BEST_DIR) if has_artifacts else None)

    # ------------------------------------------------------------------ interruption

    def request_interrupt(self) -> None:
        self.interrupted = True

    def _interrupt_running(self) -> None:
        """End every running trial; they run again on --resume (their results were not in yet)."""
        for name, measurement in list(self.measuring.items()):
            measurement.end(STOP_GRACE_SECONDS)  # not recorded: measured again on --resume
            self.measuring.pop(name)
            self.run_dir.processes.remove(measurement_key(name))
        for name, proc in list(self.processes.items()):
            proc.end(STOP_GRACE_SECONDS)
            scraper = self.scrapers.pop(name, None)
            if scraper is not None:
                scraper.stop()
            self._forget_process(name)
            self._save(self._reset(self.trials[name]))

    def _forget_process(self, name: str) -> None:
        """Drop an ended trial's process: its port, its registry entry, its live view."""
        proc = self.processes.pop(name, None)
        if proc is not None:
            self.ports.release(proc.port)
            self.gpus.release(self.gpu_of.pop(name, None))
            for rank_proc in proc.ranks if isinstance(proc, RankedTrial) else [proc]:
                self.run_dir.processes.remove(rank_proc.record.trial)
            for port in self.rank_ports.pop(name, []):
                self.ports.release(port)
        self.live.pop(name, None)

    # ------------------------------------------------------------------ outputs

    def _save(self, trial: api.Trial) -> None:
        self.trials[trial.name] = trial
        self.run_dir.save_trial(trial)

    def _value(self, trial: api.Trial) -> float | None:
        if trial.phase != api.TrialPhase.SUCCEEDED:
            return None
        return objective.scalar_value(self.spec.objective, trial.status.metrics)

    def _snapshot(self) -> Snapshot:
        finished = [t for t in self.trials.values() if t.phase.is_finished]
        best, pareto_size = self._best()
        return Snapshot(
            experiment=self.name,
            metric=self.metric,
            value_label=self.metric if not self.spec.objective.is_multi else "objective",
            finished=len(finished),
            total=plan.planned_trials(self.spec, list(self.trials.values())),
            running=list(self.live.values()),
            best=best,
            pareto_size=pareto_size,
            failed=sum(1 for t in finished if t.phase == api.TrialPhase.FAILED),
        )

    def _best(self) -> tuple[api.TrialSummary | None, int]:
        """The best trial so far (Pareto: the first front member) and the front's size.

        From the trials themselves (the status lags a tick behind); recomputed only when a trial finished.
        """
        finished = sum(1 for t in self.trials.values() if t.phase.is_finished)
        if self._best_cache is None or self._best_cache[0] != finished:
            obj = self.spec.objective
            trials = plan.results_of(self.spec, list(self.trials.values()))
            best = objective.best_trial(obj, trials)
            front = objective.pareto_front(obj, trials) if obj.is_pareto else []
            if best is None and front:
                best = front[0]
            self._best_cache = (finished, None if best is None else plan.summarize(obj, best), len(front))
        return self._best_cache[1], self._best_cache[2]

    def _best_document(self, best: api.TrialSummary, front: list[api.TrialSummary] | None = None) -> dict[str, Any]:
        output = self.run_dir.output_dir(best.name)
        artifacts = "best/" if output.is_dir() else None
        chosen = self.status.pareto_front if front is None else front
        return best_document(self.experiment, best, read_architecture(output), chosen, artifacts)

    def _write_outputs(self) -> None:
        """The report, and best.json unless the planner's ExportBest already wrote it (an interrupted
        or unfinished run exports its best so far, by the planner's own staleness rule)."""
        best, _ = self._best()
        if best is not None and plan.export_stale(self.status, best):
            self._export(best)
        try:
            report.build(self.run_dir.root)
        except Exception as exc:  # a report that cannot be drawn must not lose the run's exit status
            self.view.message(f"warning: the report could not be built: {exc}")


# ---------------------------------------------------------------------- helpers


def trial_container(spec: api.ExperimentSpec) -> dict[str, Any]:
    """The container a local trial runs: the template's first, which must say what to run.

    Raises:
        ManifestError: there is none, or it has neither command nor args.
    """
    containers = spec.trial_template.spec.get("containers") or []
    if not containers:
        raise ManifestError("trialTemplate.spec.containers is empty: the first container is the trial")
    container = dict(containers[0])
    if not (container.get("command") or container.get("args")):
        raise ManifestError(
            "spec.trialTemplate.spec.containers[0]: neither command nor args: nothing to run locally "
            "(an image's entrypoint has no local meaning)"
        )
    return container


def measurement_key(trial: str) -> str:
    """The process-registry name of a trial's latency measurement."""
    return f"{trial}/measure"


def _read_result(path: Path) -> bytes | None:
    """A trial's termination file, bounded (one byte over the limit is read, so a longer one is refused)."""
    return read_regular_file(path, trial_results.MAX_RESULT_BYTES + 1)


def _modified(path: Path) -> datetime:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return datetime.now(UTC)


def _log_tail(path: Path) -> str:
    """The last non-empty line of a trial's log (e.g. the exception), for the failure message."""
    data = read_regular_file(path, LOG_TAIL_BYTES, tail=True) or b""
    text = data.decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _install_interrupt_handler(runner: LocalRunner) -> dict[int, Any]:
    def handler(signum: int, frame: FrameType | None) -> None:
        runner.request_interrupt()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_interrupt_handler(previous: Mapping[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main(args: argparse.Namespace) -> int:
    """``kubenas run FILE [--output DIR] [--resume] [--parallel N]``."""
    try:
        experiment, text = load_experiment(Path(args.file))
        trial_container(experiment.spec)
    except ManifestError as exc:
        print(f"kubenas run: {exc}", file=sys.stderr)
        return 2
    if args.parallel is not None:
        if args.parallel < 1:
            print("kubenas run: --parallel must be at least 1", file=sys.stderr)
            return 2
        budget = experiment.spec.budget.model_copy(update={"parallel_trials": args.parallel})
        experiment = experiment.model_copy(update={"spec": experiment.spec.model_copy(update={"budget": budget})})
    run_dir = RunDirectory(Path(args.output) / experiment.metadata.name)
    if run_dir.exists() and not args.resume:
        print(
            f"kubenas run: {run_dir.root} holds an earlier run; continue it with --resume, or choose another --output",
            file=sys.stderr,
        )
        return 2
    if args.resume and not same_search(run_dir, experiment):
        print(
            f"kubenas run: {args.file} changes the search (objective, parameters or algorithm) of the run in "
            f"{run_dir.root}; a resumed run must search the same space. Use another --output.",
            file=sys.stderr,
        )
        return 2
    try:
        run_dir.lock()
    except RunLockedError as exc:
        print(f"kubenas run: {exc}", file=sys.stderr)
        return 2
    try:
        run_dir.create()
        run_dir.save_manifest(text)
        view = make_view()
        try:
            runner = LocalRunner(experiment, run_dir, view)
        except ManifestError as exc:
            print(f"kubenas run: {exc}", file=sys.stderr)
            return 2
        runner.recover()
        code = runner.run()
    finally:
        run_dir.unlock()
    print_summary(run_dir)
    if code == EXIT_INTERRUPTED:
        print(f"interrupted: continue with  kubenas run {args.file} --output {args.output} --resume")
    return code
