"""The lab's delivery: exporting a winner as the lab's files, the submission zip, and validating a zip in a
sandbox."""
