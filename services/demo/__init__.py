"""The end-to-end demo: a realistic generated population, a scripted day of edits, MailDev as the inbox."""
