class SkillBankError(Exception):
    """A user-facing problem: the message is one line naming the key, file or job and the fix."""
