"""The teacher caches moved to ``embedtool.model.teachers`` (training reads them too, and training sits beside
embedding); this name stays until every caller imports from there."""

from embedtool.model.teachers import (  # noqa: F401
    TEACHERS,
    TeacherReport,
    check_name,
    ensure_teacher_outputs,
    file_vector,
    load_teacher_vectors,
    teacher_dim,
    teacher_dir,
    teacher_network,
    teacher_of,
)

ensure_teacher_vectors = ensure_teacher_outputs
