//! Embeds the compress run's `model.sprig` and `vectors.bin` (see `sprig-board-build`).

fn main() {
    sprig_board_build::embed();
}
