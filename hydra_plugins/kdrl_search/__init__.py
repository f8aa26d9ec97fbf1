"""kdrl's Hydra sweeper plugin (Hydra instantiates plugins only from the ``hydra_plugins`` namespace).
The implementation is ``kdrl.search.sweeper``; its config is conf/hydra/sweeper/kdrl_optuna.yaml."""
