"""kdrl's Hydra sweeper plugin: ``hydra/sweeper=kdrl_listed`` (kdrl.cli.study's stages use it)."""
