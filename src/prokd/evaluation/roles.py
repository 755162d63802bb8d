"""The roles of the protocol's models: a field of training steps, evaluated models and
result rows (model names are identities, never parsed for a role)."""

# A model's role in the protocol (a field of steps, models and result rows; names are
# identities, never parsed).
TEACHER = "teacher"
LIMIT_TEACHER = "limit-teacher"
ENSEMBLE = "ensemble"
STUDENT_NOKD = "student-nokd"
STUDENT_P1 = "student-p1"
STUDENT_P2 = "student-p2"
STUDENT_BEST_TEACHER = "student-best-teacher"  # distilled from the best limit-trained teacher
STUDENT_SELF = "student-self-training"  # taught by the no-KD student: semi-supervised only
STUDENT_ROLES = (STUDENT_NOKD, STUDENT_P1, STUDENT_P2, STUDENT_BEST_TEACHER, STUDENT_SELF)
DISTILLED_ROLES = (STUDENT_P1, STUDENT_P2, STUDENT_BEST_TEACHER, STUDENT_SELF)

# How reports describe each role ({weighting}: the procedure-2 strategy).
ROLE_TEXT = {
    TEACHER: "well-trained teacher",
    LIMIT_TEACHER: "limit-trained teacher",
    ENSEMBLE: "ensemble of limit-trained teachers",
    STUDENT_NOKD: "student without KD",
    STUDENT_P1: "student, procedure 1",
    STUDENT_P2: "student, procedure 2 ({weighting})",
    STUDENT_BEST_TEACHER: "student of the best limit-trained teacher",
    STUDENT_SELF: "student self-trained from the no-KD student (no other teacher)",
}
