fn main() {
    println!("{} bytes", befund_proxy::firewall::FILTER_OBJECT.len());
}
