"""The read model's SQL adapter: SQLAlchemy Core tables, Alembic migrations, the store.

``ReadStore.open(settings.read_db_url(), create=...)`` opens it on SQLite or PostgreSQL;
the pure projection and the query types are in :mod:`fleetledger.processors.readmodel`.
"""

from fleetledger.processors.readstore.store import (
    ApplyResult,
    ArchivedRun,
    ReadStore,
    TrackedRecord,
    tracked,
)
from fleetledger.processors.readstore.views import (
    RunView,
    apply_retention,
    open_read_model,
    run_view,
)

__all__ = [
    "ApplyResult",
    "ArchivedRun",
    "ReadStore",
    "RunView",
    "TrackedRecord",
    "apply_retention",
    "open_read_model",
    "run_view",
    "tracked",
]
