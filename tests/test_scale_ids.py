"""The ASCII fast path of the identifier check says what the full Unicode check says."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from farm.ids import _why_not_name, _why_not_unicode


@given(st.text(alphabet=string.printable[:95], min_size=1, max_size=40))  # printable ASCII, space included
def test_fast_path_agrees_with_the_unicode_check(value):
    full = _why_not_unicode(value)
    fast = _why_not_name(value)
    if full is not None:  # only a separator can fail printable ASCII, and both name the same one
        assert fast == full
    else:
        assert fast is None or "separator" not in fast
