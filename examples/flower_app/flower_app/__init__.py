"""An ordinary Flower app (Message API) whose server is audited by fedleak; see ../README.md."""
