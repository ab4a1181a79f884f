-- d2d warehouse, migration 5: the views BI reads.

-- Average distance travelled by the vehicles of each (non-deleted) operating period. Sums run
-- in vehicle order so the figures equal d2d_model::distance::averages to the bit.
CREATE VIEW bi.avg_distance_per_operating_period AS
SELECT p.operating_period_id,
       count(d.vehicle_id) AS vehicles,
       sum(d.metres ORDER BY d.vehicle_id) / nullif(count(d.vehicle_id), 0) AS avg_metres,
       coalesce(sum(d.metres ORDER BY d.vehicle_id), 0) AS total_metres,
       p.start_at,
       p.finish_at
  FROM dwh.dim_operating_period AS p
  LEFT JOIN dwh.vehicle_period_distance AS d USING (operating_period_id)
 WHERE NOT p.deleted
 GROUP BY p.operating_period_id, p.start_at, p.finish_at;

COMMENT ON VIEW bi.avg_distance_per_operating_period IS
    'One row per non-deleted operating period: vehicles with a fix in it, their average and total metres (haversine, R = 6371008.8 m).';

-- The same question over all (period, vehicle) pairs at once.
CREATE VIEW bi.avg_distance_overall AS
SELECT (SELECT count(*) FROM dwh.dim_operating_period AS p WHERE NOT p.deleted) AS periods,
       count(*) AS pairs,
       sum(d.metres ORDER BY d.operating_period_id, d.vehicle_id) / nullif(count(*), 0) AS avg_metres
  FROM dwh.vehicle_period_distance AS d;

COMMENT ON VIEW bi.avg_distance_overall IS
    'One row: non-deleted periods, (period, vehicle) pairs with a fix, and the mean metres over those pairs.';

-- Per vehicle and period, for drilling into an average.
CREATE VIEW bi.vehicle_distance_per_operating_period AS
SELECT d.operating_period_id, d.vehicle_id, d.fixes, d.first_at, d.last_at, d.metres
  FROM dwh.vehicle_period_distance AS d;

COMMENT ON VIEW bi.vehicle_distance_per_operating_period IS
    'Metres travelled by each vehicle during each non-deleted operating period it has fixes in.';
