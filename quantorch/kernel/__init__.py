"""The decision kernel every mode shares: backtests, paper trading, the LLM orchestrator.

- :mod:`quantorch.kernel.book`: :class:`BookState`, the book as it really stands at a close
  (shares, cash, marks, peak equity, kill-switch state), derived from fills.
- :mod:`quantorch.kernel.execution`: frozen :class:`Order`, :class:`Fill`, :class:`Position`
  values and the pure fill rules (sizing with the cash-buffer rule, fill price, costs, the
  cash check) that the backtest engine and every simulated broker use.
- :mod:`quantorch.kernel.executor`: the tool-executor port (whole-period panels or real calls
  through the ToolRunner), both returning ``ToolResult`` s.
- :mod:`quantorch.kernel.step`: :func:`decision_step`, one session's decisions: the
  orchestrator (or a rule strategy) proposes, the RiskGuard disposes.

Nothing here imports vectorbt, the CLI or a broker SDK.
"""
