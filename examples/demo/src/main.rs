//! Demo: parse a packet, rewrite it and print the result (stub until the wire layer lands).

fn main() {
    println!("ipvs-rs demo");
}
