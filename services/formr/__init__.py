"""Form R before ARCP: a read model of Form R, ARCP and programme state; the report; the reminders."""
