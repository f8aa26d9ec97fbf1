"""kdrl's hyperparameter search: Optuna (>= 4) through its ask/tell API, as a Hydra sweeper.

``kdrl-train/kdrl-distill hparams_search=<preset> -m`` runs a search. The sweeper
(``hydra_plugins.kdrl_search``, implemented in ``kdrl.search.sweeper``) asks Optuna for a trial and
launches it as one Hydra job through whatever launcher is configured (joblib, submitit/SLURM, Ray),
``n_jobs`` trials at a time, each slot refilled as soon as its trial ends (a pruned trial frees its
slot at once). The job gets the study's identity as overrides (``+search.storage``,
``+search.study``, ``+search.trial``) and, after each periodic evaluation, reports the evaluation
(``trial.report(value, env_steps)``) and asks ``should_prune``; a pruned job stops training,
writes results.json with status "pruned" and tells Optuna ``TrialState.PRUNED``
(``kdrl.search.trial``). A job tells its own outcome, so trials launched on a cluster finish in the
study even when the sweeper that launched them was killed; the sweeper tells only what its jobs
could not (a job that died).

Workers: any number of sweeper processes (``-m`` run several times, on several nodes) share one
study through its storage (``kdrl.search.storage``: Optuna's JournalStorage on a file, the
default, which holds on NFS/Lustre, or an RDB URL). ``n_trials`` counts the study's trials over all
workers, so a killed search rerun with the same storage continues the same study up to it:
trials left RUNNING by a dead worker (no heartbeat) are failed as stale and retried with the same
parameters in the same job directory, where kdrl resumes them from their checkpoint.

``kdrl-search`` (``kdrl.search.summary``) reports a study: trials and states, compute used, the
best configuration, parameter importances, the optimisation history plot.
"""
