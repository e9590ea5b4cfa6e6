fn main() {
    println!("twitterstream-operator {}", env!("CARGO_PKG_VERSION"));
}
