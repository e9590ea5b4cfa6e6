fn main() {
    println!("twitterstream-consumer {}", env!("CARGO_PKG_VERSION"));
}
