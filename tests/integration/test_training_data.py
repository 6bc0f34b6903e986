"""Training datasets: one tool-panel computation for several periods equals one per period."""

import datetime as dt

import numpy as np

from quantorch.config import load_config
from quantorch.orchestrator.slots import resolve_slots
from quantorch.store import Store
from quantorch.training.data import market_for, period_dataset, period_datasets

TRAIN = (dt.date(2015, 1, 1), dt.date(2015, 12, 31))
VALIDATION = (dt.date(2016, 1, 1), dt.date(2016, 6, 30))


def test_shared_panels_equal_panels_per_period(loaded_db_template):
    config = load_config().with_overrides({"universe": ["AAPL", "JPM", "KO"]})
    store = Store(loaded_db_template)
    market = market_for(config, store, TRAIN[0], VALIDATION[1])
    slots = resolve_slots(["technical:basic", "risk:full", "fundamental:factor"])
    horizon = config.orchestrator.horizon
    train, validation = period_datasets(market, slots, [TRAIN, VALIDATION], horizon)
    alone_train = period_dataset(market, slots, *TRAIN, horizon)
    alone_val = period_dataset(market, slots, *VALIDATION, horizon,
                               normalisation=alone_train.normalisation)
    for shared, alone in ((train, alone_train), (validation, alone_val)):
        assert shared.tickers.tolist() == alone.tickers.tolist()
        assert (shared.dates == alone.dates).all()
        np.testing.assert_array_equal(shared.context, alone.context)
        np.testing.assert_array_equal(shared.forward_return, alone.forward_return)
        np.testing.assert_array_equal(shared.slot_coverage, alone.slot_coverage)
        for a, b in zip(shared.slot_features, alone.slot_features, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert validation.normalisation == train.normalisation
    # each period's labels stop at its own end: the training year's last sessions are unknown
    last = train.dates == train.dates.max()
    assert np.isnan(train.forward_return[last]).all()
