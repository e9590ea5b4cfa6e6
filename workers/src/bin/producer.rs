fn main() {
    println!("twitterstream-producer {}", env!("CARGO_PKG_VERSION"));
}
