"""One request: its options, its conversation, the pipeline it runs through, the events it
yields and the answer with its decision record."""
