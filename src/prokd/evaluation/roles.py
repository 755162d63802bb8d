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
STUDENT_ROLES = (STUDENT_NOKD, STUDENT_P1, STUDENT_P2)
DISTILLED_ROLES = (STUDENT_P1, STUDENT_P2)

# How reports describe each role ({weighting}: the procedure-2 strategy).
ROLE_TEXT = {
    TEACHER: "well-trained teacher",
    LIMIT_TEACHER: "limit-trained teacher",
    ENSEMBLE: "ensemble of limit-trained teachers",
    STUDENT_NOKD: "student without KD",
    STUDENT_P1: "student, procedure 1",
    STUDENT_P2: "student, procedure 2 ({weighting})",
}
