"""The shadow is the AnnData surface over one ShadowElements (core/elements.py); each element is served by
one Element per path (core/element.py), kept while the shadow's elements are the same.
"""

from __future__ import annotations

import pickle

import numpy as np

from conftest import read_oracle
from helpers import assert_value_equal
from shadows import AnnDataShadow


def test_a_shadow_holds_only_its_elements(path):
    shadow = AnnDataShadow(path)
    view = shadow[::2, 1:5]
    for each in (shadow, view, view[1:3], shadow.copy()):
        assert set(vars(each)) == {"_elements"}
        assert each._elements.shadow is each
    shadow.obsm["new"] = np.zeros((shadow.n_obs, 2))
    _ = shadow.X, shadow.obs, shadow.raw
    assert set(vars(shadow)) == {"_elements"}


def test_one_element_per_path_kept_until_the_elements_change(path):
    shadow = AnnDataShadow(path)
    elements = shadow._elements
    assert elements.element("X") is elements.element("X")
    assert elements.element("X") is not elements.element("obs")
    kept = shadow.obs_names[::3]
    shadow._inplace_subset_obs(kept)  # the elements take over the kept part: their Elements are new
    assert shadow._elements is elements and elements.element("X").elements is elements
    oracle = read_oracle(path)[kept]
    assert_value_equal(shadow.X, oracle.X, "X after an in-place subset")
    assert_value_equal(shadow.obs, oracle.obs, "obs after an in-place subset")


def test_a_views_changes_meet_its_roots_in_the_elements(path):
    shadow = AnnDataShadow(path)
    shadow.obsm["extra"] = np.arange(shadow.n_obs * 2, dtype=float).reshape(-1, 2)
    shadow.obs["flag"] = np.arange(shadow.n_obs) % 2 == 0
    view = shadow[10:20]
    changes = view._elements.mapping_changes("obsm", lambda: [])
    assert set(changes.inherited) == {"extra"} and not changes.staged  # the root's, not the view's own
    assert_value_equal(view.obsm["extra"], shadow.obsm["extra"][10:20], "obsm seen by a view")
    assert list(view._elements.visible_staged_columns("obs")) == ["flag"]
    view.obsm["extra"] = np.ones((10, 2))  # the view becomes a shadow of its own
    assert not view.is_view and view._elements.root is view._elements
    assert_value_equal(shadow.obsm["extra"][10:20], np.arange(20, 40, dtype=float).reshape(-1, 2), "root's own")


def test_pickled_views_come_back_with_their_changes(path):
    shadow = AnnDataShadow(path)
    shadow.obs["flag"] = np.arange(shadow.n_obs) % 3 == 0
    view = shadow[5:25, ::2]
    view.uns["note"] = "view"
    back = pickle.loads(pickle.dumps(view))
    assert type(back) is AnnDataShadow and set(vars(back)) == {"_elements"}
    assert back.shape == view.shape and back.uns["note"] == "view"
    assert_value_equal(back.obs["flag"], view.obs["flag"], "a view's column after a pickle")
    assert_value_equal(back.X, view.X, "a view's X after a pickle")
