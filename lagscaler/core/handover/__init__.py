"""The handover's pure parts: the control records (:mod:`.protocol`) and the controller's state machine
(:mod:`.machine`). The IO around them lives in :mod:`lagscaler.edges.handover`."""
