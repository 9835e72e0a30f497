"""Model parallel for linear models: peers own blocks of feature columns and exchange partial
products (:mod:`.peer`), and the runner with its single-machine reference (:mod:`.run`)."""
