"""Fixtures for the data tests."""

import pytest
from helpers.data_helpers import make_coco


@pytest.fixture
def coco_factory(tmp_path):
    def factory(images, annotations, categories, **kw):
        return make_coco(tmp_path, images, annotations, categories, **kw), tmp_path / "images"

    return factory
