//! The start-up indexes meeting indexes an operator made first: kept, never blocking
//! writes (MongoDB refuses a second index on one key pattern with IndexOptionsConflict).
use mongodb::{bson::doc, bson::Document, options::IndexOptions, IndexModel};

use crate::helpers::{mongo_client, spawn_app, unique, valid_event, AppOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_index_on_sku_under_another_name_is_kept_and_events_are_stored() {
    let database = unique("db");
    let coll = mongo_client()
        .await
        .database(&database)
        .collection::<Document>("raw_sales");
    let by_ops = IndexModel::builder()
        .keys(doc! { "sku": 1 })
        .options(
            IndexOptions::builder()
                .name("sku_by_ops".to_string())
                .build(),
        )
        .build();
    coll.create_index(by_ops).await.unwrap();
    let app = spawn_app(AppOptions {
        kafka: false,
        database: Some(database),
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let ack = app.ingest(vec![valid_event(1, "ix-1")]).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
    assert_eq!(
        coll.count_documents(doc! { "_id": "ix-1" }).await.unwrap(),
        1
    );
    let names = coll.list_index_names().await.unwrap();
    assert!(names.contains(&"sku_by_ops".to_string()), "{names:?}");
    assert!(names.contains(&"ts_1".to_string()), "{names:?}");
    app.stop().await;
}
