"""Backtesting: the simulation kernel, performance measures, HTML reports, the runner.

- :mod:`quantorch.backtest.engine`: target weights -> fills and daily equity (vectorbt).
- :mod:`quantorch.backtest.metrics`: pure performance measures and their pandas wrapper.
- :mod:`quantorch.backtest.report`: the self-contained HTML report of one run.
- :mod:`quantorch.backtest.runner`: one backtest from a config, end to end.

Nothing is re-exported here so that importing a light module (metrics) does not pay for
importing vectorbt; import from the submodules.
"""
