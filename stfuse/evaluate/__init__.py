"""Scoring: metrics (:mod:`.metrics`), a prediction file against a truth (:mod:`.files`), benchmark
tasks (:mod:`.tasks`), leave-one-date-out holdout (:mod:`.holdout`) and reports (:mod:`.report`)."""
