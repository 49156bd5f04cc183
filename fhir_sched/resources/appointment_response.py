"""AppointmentResponse: a participant's answer (a patient confirming or cancelling from a
reminder's signed link is recorded as one); required participantStatus."""

BINDINGS = {
    "participantStatus": ("accepted", "declined", "tentative", "needs-action"),
}
