"""Bundled model specs (YAML package data, ``NAME.yaml``) and their test data (``NAME.test.yaml`` beside each);
load them with ``tokenprune.load_spec(name)`` and ``tokenprune.spec_testdata.load_test_model(name)``."""
