"""``kvcache lint``: find the prompt edits that break prefix caching.

Rules live one per file in ``rules/``; :mod:`.rule` holds the base class and
the registry, :mod:`.document` the parsed inputs, :mod:`.diagnostic` what a
rule reports, :mod:`.classify` the cross-request edit classifier that the
replay analyzers reuse.
"""
