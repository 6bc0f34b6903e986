"""The sample source's static catalogue (what makes ticker checks instant) is what the installed
packages really ship."""

from quantorch.data.providers.sample import SampleProvider, measured_spans


def test_catalogue_matches_the_data():
    assert SampleProvider().available() == measured_spans()
