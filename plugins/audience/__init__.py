"""The audience plugin: behaviour events (watch, like, comment, gift, card impression, click,
add to cart, order, coupon shown / redeemed) collected through a bounded, non-blocking writer
into SQLite or a Redis Stream, and the models built from them: collaborative-filtering
recommendations of streams and products, "also bought". Everything but the plugin and the
stores is sans-I/O with the time passed in."""
